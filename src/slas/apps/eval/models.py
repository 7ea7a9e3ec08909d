"""The one model loader of ``slas eval``, ``slas sample`` and ``slas toyworld eval``: a run directory, a ShapesWorld
checkpoint, a diffusers pipeline, or the shipped ShapesWorld model. A run's trained weights load through
``slas.recipe.run_dir.load_run``, the one trained-weights loader that ``slas export`` shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slas.algo.samplers import TimeShift
from slas.apps.eval.options import EvalError, NotSupportedError
from slas.policy.base import Backbone
from slas.policy.generate import sampling_shift
from slas.recipe.run_dir import RunError, load_run, looks_like_run


@dataclass
class Model:
    backbone: Backbone
    description: str  # what was loaded, for the summary ("run runs/x iter_000050 (EMA weights)")
    shapesworld: bool  # reads the ShapesWorld grammar only (and scores with the ShapesWorld verifier)
    steps: int  # default ODE steps
    shift: float | TimeShift = 1.0  # flow time shift of the ODE (real velocity backbones; ShapesWorld samples with 1)
    from_run: bool = False  # the latest checkpoint of a run directory (the CLI says which weights it read)


# diffusers pipeline class (model_index.json "_class_name") -> slas.policy backbone name
PIPELINE_BACKBONES = {"FluxPipeline": "flux", "StableDiffusion3Pipeline": "sd3", "StableDiffusionPipeline": "sd"}


def load_model(spec: str | None, ema: bool = True, device: str = "auto", resolution: int = 0,
               shapesworld_only: str | None = None) -> Model:
    """``base``, a run directory (or one of its ``checkpoints/iter_NNNNNN``), a ShapesWorld checkpoint directory, or a
    diffusers pipeline directory (``--model`` of ``slas eval``; errors are ``EvalError``s that name the flag, or the
    loaders' ``RunError``s that name the file). Every layout is checked before it is loaded.

    A run gives its latest checkpoint (a checkpoint directory: that one), built from the run's own config.yaml: its
    EMA weights when ``ema`` and the run keeps one (as training's own evaluation), else the policy's. ``device`` and
    ``resolution`` apply to diffusers pipelines (``model.device`` / ``model.resolution``); a run keeps its own
    config's.

    ``shapesworld_only``: the command (``sample``, ``toyworld eval``) that samples ShapesWorld models only, from its
    ``--checkpoint``: then ``spec`` is a run of the ``toy`` backbone or one of its checkpoints (a run of another
    backbone is refused before it is built), a ShapesWorld checkpoint directory, a shipped name (toy_S, toy_M, toy_L)
    or None (the shipped toy_M), and the errors are the run's and the checkpoint's own (``RunError``,
    ``FileNotFoundError``).
    """
    from slas.toyworld.backbone import ToyBackbone
    from slas.toyworld.evaluate import EVAL_STEPS

    if shapesworld_only is not None:
        if spec is not None and looks_like_run(spec):
            def toy_runs_only(cfg) -> None:
                if cfg.model.backbone != "toy":
                    raise RunError(f"{spec} trains a {cfg.model.backbone!r} model, and `slas {shapesworld_only}` "
                                   "samples ShapesWorld (model.backbone toy) models only; evaluate it with `slas eval "
                                   f"--model {spec} --suite reward --prompts FILE ...`")

            return _load_run(Path(spec), ema, toy_runs_only)
        description = f"ShapesWorld checkpoint {spec}" if spec is not None else "the shipped ShapesWorld model toy_M"
        return Model(ToyBackbone.from_checkpoint(spec), description, True, EVAL_STEPS)

    if spec == "base":
        return Model(ToyBackbone.from_checkpoint(None), "base (the shipped ShapesWorld model)", True, EVAL_STEPS)
    path = Path(spec)
    if not path.is_dir():
        raise EvalError(f"--model {spec}: not a directory; expected a run directory of `slas train` (config.yaml), a "
                        "ShapesWorld checkpoint (model.safetensors + config.json), a diffusers pipeline directory "
                        "(model_index.json) or 'base'")
    if looks_like_run(path):
        try:
            return _load_run(path, ema)
        except RunError as e:
            raise EvalError(f"--model {e}") from None
    if (path / "model_index.json").exists():
        return _load_pipeline(path, device, resolution)
    if (path / "model.safetensors").exists() or (path / "config.json").exists():  # the loader names a missing one
        return Model(ToyBackbone.from_checkpoint(path), f"ShapesWorld checkpoint {path}", True, EVAL_STEPS)
    raise EvalError(f"--model {spec}: holds neither config.yaml (a run), model_index.json (a diffusers pipeline) nor "
                    "model.safetensors + config.json (a ShapesWorld checkpoint)")


def _load_run(path: Path, ema: bool, check=None) -> Model:
    """The latest checkpoint of a run (``slas.recipe.run_dir.load_run``; ``check(cfg)`` may refuse it before the
    backbone is built)."""
    run = load_run(path, ema=None if ema else False, check=check)
    toy = run.cfg.model.backbone == "toy"
    shift = 1.0 if toy else sampling_shift(run.backbone, run.cfg.eval.shift, run.cfg.sample.shift)
    return Model(run.backbone, run.description, toy, run.cfg.eval.steps, shift, from_run=True)


def _load_pipeline(path: Path, device: str, resolution: int) -> Model:
    """A local diffusers pipeline through its ``slas.policy`` adapter (``from_config`` of a default model section)."""
    from slas.config import ModelConfig
    from slas.policy import adapter_class, adapters
    from slas.recipe import pipeline_folder
    from slas.toyworld.evaluate import EVAL_STEPS

    cls = pipeline_folder.read_index(path)["_class_name"]
    name = PIPELINE_BACKBONES.get(cls)
    known = adapters()
    if name is None or name not in known:
        raise NotSupportedError(f"--model {path}: {cls} pipelines are not supported by `slas eval` yet: sampling goes "
                                "through a slas.policy backbone adapter, and there is none for this pipeline class "
                                f"(supported: {sorted(c for c, n in PIPELINE_BACKBONES.items() if n in known)})")
    backbone = pipeline_folder.load(adapter_class(name), ModelConfig(backbone=name, path=str(path), device=device,
                                                                     resolution=resolution))
    backbone.module.eval()
    return Model(backbone, f"{cls} {path}", False, EVAL_STEPS, sampling_shift(backbone, "auto"))  # --shift overrides
