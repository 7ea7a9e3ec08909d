"""``slas eval``: sample a model with the deterministic ODE sampler, score one suite, write the results; compare two.

Suites (``SUITES``: one ``Suite`` class each, which samples and scores, summarises, and prints):

- ``geneval``: GenEval's rules (``slas.evals.geneval``) over a detector (``slas.evals.detectors``): the ShapesWorld
  verifier for ShapesWorld models, Mask2Former + CLIP for real images. One line per image in upstream's result
  format (``evaluation/evaluate_images.py``: ``filename, tag, prompt, correct, reason, metadata, details``, the last
  two JSON strings), so upstream's ``summary_scores.py`` reads ``results.jsonl`` as is.
- ``toyworld``: the ShapesWorld table of ``slas toyworld eval`` (strict gold accuracy, GenEval rules, exact counts).
- ``reward``: any registered reward (``slas.rewards``), mean with a 95% confidence interval.
- ``unigenbench``: the UniGenBench++ judge client (``slas.evals.unigenbench``); needs a judge endpoint.

Every run writes into its output directory ``results.jsonl`` (one record per image), ``summary.json`` (the scores and
every setting needed to reproduce them) and, unless turned off, ``images/`` in GenEval's folder layout
(``NNNNN/metadata.jsonl`` + ``NNNNN/samples/NNNN.png``), which upstream's ``evaluate_images.py`` also reads.

Sampling is deterministic and the same as training's held-out evaluation: ``toyworld.evaluate.plan`` fixes each
image's seed from its prompt's position, and every backbone samples through ``slas.policy.generate`` with its own
sampler at eta 0 (the Euler ODE, or deterministic DDIM), as ``slas toyworld eval`` and training's evaluation do.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slas.evals import geneval
from slas.evals.stats import MIN_N, mean_ci, paired_bootstrap, wilson
from slas.policy.base import Backbone
from slas.recipe.run_dir import is_run_dir

__all__ = [
    "COMPARABLE",
    "SUITES",
    "EvalError",
    "EvalOptions",
    "Model",
    "NotSupportedError",
    "PIPELINE_BACKBONES",
    "compare_results",
    "format_compare",
    "format_summary",
    "load_model",
    "load_results",
    "read_geneval_folder",
    "read_prompts_file",
    "run_suite",
]

RESULTS_FILE, SUMMARY_FILE, IMAGES_DIR = "results.jsonl", "summary.json", "images"
# per suite: the per-image values `--compare` tests, and whether the headline averages over tags (GenEval) or images
COMPARABLE: dict[str, tuple[tuple[str, ...], bool]] = {
    "geneval": (("correct",), True),
    "toyworld": (("correct", "geneval_correct"), True),
    "reward": (("reward",), False),
}


class EvalError(ValueError):
    """A user error in an evaluation request (the CLI prints it as one ``error:`` line)."""


class NotSupportedError(EvalError):
    """The request is valid but this version cannot serve it yet (e.g. a pipeline without a backbone adapter)."""


Progress = Callable[[int, str], Any]  # (total, description) -> an object with update(n) and close(), e.g. tqdm


@dataclass
class EvalOptions:
    """One ``slas eval`` request (the CLI's flags)."""

    suite: str
    """One of ``SUITES``."""
    out: Path
    """Output directory: results.jsonl, summary.json, images/."""
    model: str | None = None
    """A run directory of ``slas train`` (latest checkpoint, its config.yaml), a ShapesWorld checkpoint directory,
    a diffusers pipeline directory, or ``base`` (the shipped ShapesWorld model)."""
    images: Path | None = None
    """geneval only: score existing images in GenEval's folder layout instead of sampling a model."""
    split: str = "eval"
    """ShapesWorld split whose prompts are sampled (when no ``prompts`` file is given)."""
    prompts: Path | None = None
    """Prompts file: one prompt per line, or GenEval metadata JSONL (one object with ``prompt`` per line)."""
    max_prompts: int = 0
    """0 = every prompt; else a fixed tag-balanced subset of this many (``toyworld.evaluate.balanced_subset``)."""
    n_per_prompt: int | None = None
    """Images per prompt; None = 1 (4 for unigenbench, as upstream)."""
    images_per_tag: int = 0
    """> 0: this many images per tag, cycling over its prompts (``toyworld.evaluate.plan``); overrides n_per_prompt."""
    steps: int | None = None
    """Euler ODE steps; None = the run's ``eval.steps``, else ``toyworld.evaluate.EVAL_STEPS``."""
    batch_size: int | None = None
    """Images per sampler forward and per reward call; None = 128 for ShapesWorld, 8 for diffusers backbones."""
    shift: float | None = None
    """Flow time shift of a diffusers velocity backbone's ODE; None = the run's sample.shift, or the pipeline
    scheduler's static shift. ShapesWorld models always sample with 1 (as ``slas toyworld eval``)."""
    resolution: int = 0
    """Image side of a diffusers pipeline (``model.resolution``); 0 = the backbone's default."""
    ema: bool = True
    """Use a run's EMA weights when it has them (as training's own evaluation does)."""
    save_images: bool = True
    """Write the images in GenEval's folder layout under ``out/images``."""
    detector: str | None = None
    """geneval: ``shapesworld`` or ``mask2former``; None = shapesworld for ShapesWorld models, else mask2former."""
    detector_path: str | None = None
    """mask2former: local Mask2Former instance-segmentation checkpoint directory."""
    clip_path: str | None = None
    """mask2former: local CLIPModel directory for the colour classifier."""
    device: str = "auto"
    """Device of a diffusers pipeline and of the detector models: ``auto`` (cuda if available), ``cpu``,
    ``cuda:0``, ... A run uses its own config's model.device."""
    reward: str | None = None
    """reward: registered reward name."""
    reward_options: dict = field(default_factory=dict)
    """reward: options of the reward's factory (model paths, ...)."""
    unigenbench_split: str = "short"
    """unigenbench: ``short`` or ``long`` prompts."""
    data_dir: str | None = None
    """unigenbench: data folder (default ``$SLAS_DATA/unigenbench``)."""
    judge_concurrency: int = 8
    """unigenbench: judge requests in flight."""
    overwrite: bool = False
    """Replace the result already in ``out`` (else an ``out`` that holds one is refused, as ``slas train`` refuses
    a run directory that holds a run)."""


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


@dataclass
class Model:
    backbone: Backbone
    description: str  # what was loaded, for the summary ("run runs/x iter_000050 (EMA weights)")
    shapesworld: bool  # reads the ShapesWorld grammar only (and scores with the ShapesWorld verifier)
    steps: int  # default ODE steps
    shift: float = 1.0  # flow time shift of the ODE (real velocity backbones; ShapesWorld always samples with 1)


# diffusers pipeline class (model_index.json "_class_name") -> slas.policy backbone name
PIPELINE_BACKBONES = {"FluxPipeline": "flux", "StableDiffusion3Pipeline": "sd3", "StableDiffusionPipeline": "sd"}


def load_model(spec: str, ema: bool = True, device: str = "auto", resolution: int = 0) -> Model:
    """``base``, a run directory, a ShapesWorld checkpoint directory, or a diffusers pipeline directory.

    ``device`` and ``resolution`` apply to diffusers pipelines (``model.device`` / ``model.resolution``); a run keeps
    its own config's.
    """
    from slas.toyworld.backbone import ToyBackbone
    from slas.toyworld.evaluate import EVAL_STEPS

    if spec == "base":
        return Model(ToyBackbone.from_checkpoint(None), "base (the shipped ShapesWorld model)", True, EVAL_STEPS)
    path = Path(spec)
    if not path.is_dir():
        raise EvalError(f"--model {spec}: not a directory; expected a run directory of `slas train` (config.yaml), a "
                        "ShapesWorld checkpoint (model.safetensors + config.json), a diffusers pipeline directory "
                        "(model_index.json) or 'base'")
    if is_run_dir(path):
        return _load_run(path, ema)
    if (path / "model_index.json").is_file():
        return _load_pipeline(path, device, resolution)
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
        return Model(ToyBackbone.from_checkpoint(path), f"ShapesWorld checkpoint {path}", True, EVAL_STEPS)
    raise EvalError(f"--model {spec}: holds neither config.yaml (a run), model_index.json (a diffusers pipeline) nor "
                    "model.safetensors + config.json (a ShapesWorld checkpoint)")


def _load_run(path: Path, ema: bool) -> Model:
    """The latest checkpoint of a run, built from the run's own config.yaml (``slas.recipe.run_dir.load_run``): its EMA
    weights when ``ema`` and the run keeps one (as training's own evaluation), else the policy's."""
    from slas.recipe.run_dir import RunError, load_run

    try:
        run = load_run(path, ema=None if ema else False)
    except RunError as e:
        raise EvalError(f"--model {e}") from None
    toy = run.cfg.model.backbone == "toy"
    return Model(run.backbone, run.description, toy, run.cfg.eval.steps, 1.0 if toy else run.cfg.sample.shift)


def _load_pipeline(path: Path, device: str, resolution: int) -> Model:
    """A local diffusers pipeline through its ``slas.policy`` adapter (``from_config`` of a default model section)."""
    from slas.config import ModelConfig
    from slas.policy import adapter_class, adapters
    from slas.toyworld.evaluate import EVAL_STEPS

    try:
        cls = json.loads((path / "model_index.json").read_text()).get("_class_name", "?")
    except (json.JSONDecodeError, AttributeError):
        raise EvalError(f"--model {path}: model_index.json is not a diffusers pipeline index") from None
    name = PIPELINE_BACKBONES.get(cls)
    known = adapters()
    if name is None or name not in known:
        raise NotSupportedError(f"--model {path}: {cls} pipelines are not supported by `slas eval` yet: sampling goes "
                                "through a slas.policy backbone adapter, and there is none for this pipeline class "
                                f"(supported: {sorted(c for c, n in PIPELINE_BACKBONES.items() if n in known)})")
    backbone = adapter_class(name).from_config(ModelConfig(backbone=name, path=str(path), device=device,
                                                           resolution=resolution))
    backbone.module.eval()
    shift = 1.0
    sched = path / "scheduler" / "scheduler_config.json"
    if backbone.prediction == "velocity" and sched.is_file():
        # the scheduler's static shift (FLUX.1-dev: 3.0, as DanceGRPO samples it; its resolution-dependent dynamic
        # shifting is not reproduced); --shift overrides it
        shift = float(json.loads(sched.read_text()).get("shift", 1.0))
    return Model(backbone, f"{cls} {path}", False, EVAL_STEPS, shift)


# ----------------------------------------------------------------------------
# Prompts and images
# ----------------------------------------------------------------------------


def read_prompts_file(path: Path, shapesworld: bool) -> list[dict]:
    """``slas.recipe.prompts.load_prompts``; ShapesWorld models get each text prompt's metadata from the grammar
    (``toyworld.parse``, which names a word it does not know)."""
    from slas.recipe.prompts import load_prompts
    from slas.toyworld import parse

    try:
        entries = load_prompts(path, parse if shapesworld else None)
        return [parse(r["prompt"]) for r in entries] if shapesworld else entries  # the grammar's metadata
    except (ValueError, FileNotFoundError) as e:
        raise EvalError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


def _entries(opts: EvalOptions, model: Model) -> list[dict]:
    from slas.toyworld import split
    from slas.toyworld.evaluate import balanced_subset

    if opts.prompts is not None:
        entries = read_prompts_file(opts.prompts, model.shapesworld)
        return entries[: opts.max_prompts] if opts.max_prompts > 0 else entries
    if not model.shapesworld:
        raise EvalError(f"--suite {opts.suite} needs --prompts FILE for a model that is not a ShapesWorld model")
    return balanced_subset(split(opts.split), opts.max_prompts)


@dataclass
class _Samples:
    metas: list[dict]  # per image
    seeds: list[int]  # per image
    prompt_ids: list[int]  # per image: index of its entry (GenEval folder NNNNN)
    sample_ids: list[int]  # per image: its number among its prompt's images (samples/NNNN.png)
    images: np.ndarray  # uint8 [N, H, W, 3]
    seconds: float


def _sample(model: Model, entries: list[dict], n_per_prompt: int, images_per_tag: int, steps: int,
            batch_size: int | None, progress: Progress | None) -> _Samples:
    from slas.policy.generate import deterministic_sampler, generate
    from slas.toyworld.evaluate import plan

    metas, seeds = plan(entries, n_per_prompt, images_per_tag)
    position = {id(e): i for i, e in enumerate(entries)}  # plan returns the entry objects themselves
    prompt_ids = [position[id(m)] for m in metas]
    seen: dict[int, int] = {}
    sample_ids = []
    for pid in prompt_ids:
        sample_ids.append(seen.get(pid, 0))
        seen[pid] = sample_ids[-1] + 1
    bar = progress(len(metas), "sampling") if progress else None
    t0 = time.perf_counter()
    prompts = [m["prompt"] for m in metas]
    # as training's evaluation draws them: the backbone's own sampler at eta 0 from seeded noise
    images = generate(model.backbone, prompts, seeds, steps, sampler=deterministic_sampler(model.backbone, steps, model.shift),
                      batch_size=batch_size or (128 if model.shapesworld else 8), progress=bar.update if bar else None)
    seconds = time.perf_counter() - t0
    if bar:
        bar.close()
    return _Samples(metas, seeds, prompt_ids, sample_ids, images, seconds)


def _save_images(out: Path, s: _Samples) -> list[str]:
    """GenEval's generation layout (``generation/diffusers_generate.py``): ``NNNNN/metadata.jsonl`` (the metadata as
    one JSON object) and ``NNNNN/samples/NNNN.png``. Returns each image's path relative to ``out``."""
    from PIL import Image

    names = []
    for img, meta, pid, k in zip(s.images, s.metas, s.prompt_ids, s.sample_ids, strict=True):
        folder = out / IMAGES_DIR / f"{pid:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        if k == 0:
            (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        name = f"{IMAGES_DIR}/{pid:05d}/samples/{k:04d}.png"
        Image.fromarray(img).save(out / name)
        names.append(name)
    return names


def read_geneval_folder(folder: Path) -> list[tuple[dict, np.ndarray, str, int]]:
    """Images in GenEval's folder layout, as upstream ``evaluate_images.py`` ``main`` walks them: every all-digit
    subfolder holds ``metadata.jsonl`` (one JSON object) and ``samples/<digits>.png``. Returns
    ``(metadata, uint8 [H, W, 3] image, path, sample number)`` in folder then sample order."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise EvalError(f"--images {folder}: not a directory")
    out = []
    for sub in sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        meta_file = sub / "metadata.jsonl"
        if not meta_file.is_file():
            raise EvalError(f"{sub}: no metadata.jsonl (GenEval's layout: NNNNN/metadata.jsonl + NNNNN/samples/*.png)")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise EvalError(f"{meta_file}: not one JSON object: {e}") from None
        pngs = [p for p in (sub / "samples").glob("*.png") if re.fullmatch(r"\d+\.png", p.name)]
        for png in sorted(pngs, key=lambda p: int(p.stem)):
            with Image.open(png) as im:
                out.append((meta, np.asarray(im.convert("RGB")), str(png), int(png.stem)))
    if not out:
        raise EvalError(f"--images {folder}: no NNNNN/samples/NNNN.png images found")
    return out


# ----------------------------------------------------------------------------
# Suites
# ----------------------------------------------------------------------------


def _detector(opts: EvalOptions, shapesworld: bool):
    from slas.evals.detectors import Mask2FormerDetector
    from slas.toyworld.detector import ShapesWorldDetector

    name = opts.detector or ("shapesworld" if shapesworld else "mask2former")
    if name == "shapesworld":
        return ShapesWorldDetector()
    if name != "mask2former":
        raise EvalError(f"--detector must be 'shapesworld' or 'mask2former', got {name!r}")
    if shapesworld:
        raise EvalError("ShapesWorld prompts name circles, squares and triangles, which a COCO detector does not know; "
                        "use --detector shapesworld")
    if not opts.detector_path or not opts.clip_path:
        raise EvalError("--detector mask2former needs --detector-path DIR (a local Mask2Former instance-segmentation "
                        "checkpoint) and --clip-path DIR (a local CLIPModel for the colours)")
    return Mask2FormerDetector(opts.detector_path, opts.clip_path, device=opts.device)


def _geneval_record(image: np.ndarray, meta: dict, detector, filename: str | None) -> dict:
    """One line of upstream's results JSONL (``evaluate_image``'s return value)."""
    r = geneval.evaluate_detections(meta, detector(image, meta), image.shape[:2])
    return {"filename": filename, "tag": r["tag"], "prompt": r["prompt"], "correct": r["correct"],
            "reason": r["reason"], "metadata": r["metadata"], "details": json.dumps(r["details"])}


def _sample_for(opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[_Samples, dict]:
    entries = _entries(opts, model)
    if opts.images_per_tag > 0 and not all(e.get("tag") for e in entries):
        raise EvalError("--images-per-tag cycles over each tag's prompts: every prompt needs a GenEval 'tag'")
    n = opts.n_per_prompt or 1
    steps = opts.steps or model.steps
    s = _sample(model, entries, n, opts.images_per_tag, steps, opts.batch_size, progress)
    info = {"model": model.description, "prompts": str(opts.prompts) if opts.prompts else f"ShapesWorld {opts.split}",
            "n_prompts_sampled": len(entries), "n_per_prompt": n, "images_per_tag": opts.images_per_tag,
            "max_prompts": opts.max_prompts, "steps": steps, "sample_s": s.seconds,
            "sampler": _sampler_name(model)}
    return s, info


def _sampler_name(model: Model) -> str:
    if model.shapesworld:
        return "Euler ODE, shift 1 (slas.policy.generate)"
    if model.backbone.prediction == "epsilon":
        return "DDIM, eta 0"
    return f"Euler ODE, shift {model.shift:g}"


# ----------------------------------------------------------------------------
# Suites: one class each (sample and score, summarise, print)
# ----------------------------------------------------------------------------


class Suite(ABC):
    """One ``slas eval --suite``: ``run`` samples (or reads) images and scores them into per-image records and run
    info; ``summarize`` turns them into the suite's scores; ``format`` is the table the CLI prints."""

    name = ""

    @abstractmethod
    def run(self, opts: EvalOptions, model: Model | None, progress: Progress | None) -> tuple[list[dict], dict]:
        """Per-image records and the run's info (settings, timings; ``scores`` for suites that summarise while
        scoring)."""

    def summarize(self, records: list[dict], info: dict) -> dict:
        return info.pop("scores")  # the suite's own summary, computed while scoring

    @abstractmethod
    def format(self, summary: dict) -> str:
        """The table ``slas eval`` prints for ``summary``."""


class GenEvalSuite(Suite):
    """GenEval's rules on detections (slas.evals.geneval): of sampled images, or of an existing image folder."""

    name = "geneval"

    def run(self, opts: EvalOptions, model: Model | None, progress: Progress | None) -> tuple[list[dict], dict]:
        if opts.images is not None:
            items = read_geneval_folder(opts.images)
            shapesworld = opts.detector == "shapesworld"
            detector = _detector(opts, shapesworld)
            t0 = time.perf_counter()
            records = []
            for meta, img, path, k in items:
                rec = _geneval_record(img, meta, detector, path)
                records.append(rec | {"seed": None, "sample": k})
            info = {"model": None, "images": str(opts.images), "score_s": time.perf_counter() - t0}
            return records, info | {"detector": detector.name}
        detector = _detector(opts, model.shapesworld)
        s, info = _sample_for(opts, model, progress)
        names = _save_images(opts.out, s) if opts.save_images else [None] * len(s.metas)
        t0 = time.perf_counter()
        records = [
            _geneval_record(img, meta, detector, name) | {"seed": seed, "sample": k}
            for img, meta, name, seed, k in zip(s.images, s.metas, names, s.seeds, s.sample_ids, strict=True)
        ]
        return records, info | {"detector": detector.name, "score_s": time.perf_counter() - t0}

    def summarize(self, records: list[dict], info: dict) -> dict:
        out = geneval.summarize(records)
        out["per_tag_counts"] = {t: list(c) for t, c in out["per_tag_counts"].items()}
        return out

    def format(self, summary: dict) -> str:
        def ci(p: float, n: int) -> str:
            lo, hi = wilson(p * n, n)
            return f"[{lo:.1%}, {hi:.1%}]"

        lines = [f"{'tag':<15}{'accuracy':>10}  {'95% CI (Wilson)':<17}{'correct':>8}{'n':>6}"]
        for tag, acc in summary["per_tag"].items():
            c, n = summary["per_tag_counts"][tag]
            lines.append(f"{tag:<15}{acc:>10.1%}  {ci(acc, n):<17}{c:>8}{n:>6}")
        n_all = summary["n_images"]
        lines.append(f"{'overall':<15}{summary['overall']:>10.1%}  {ci(summary['overall'], n_all):<17}{'':>8}{n_all:>6}")
        lines.append(f"(overall = mean over tags; images correct {summary['image_accuracy']:.1%}, prompts with a "
                     f"correct image {summary['prompt_accuracy']:.1%}; detector {summary['detector']})")
        return "\n".join(lines)


class ToyWorldSuite(Suite):
    """The ShapesWorld strict verifier (the gold) on a ShapesWorld model's samples."""

    name = "toyworld"

    def run(self, opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[list[dict], dict]:
        from slas.toyworld import verify
        from slas.toyworld.evaluate import summarize as toy_summarize

        if not model.shapesworld:
            raise EvalError("--suite toyworld scores ShapesWorld models only")
        s, info = _sample_for(opts, model, progress)
        names = _save_images(opts.out, s) if opts.save_images else [None] * len(s.metas)
        t0 = time.perf_counter()
        results = [verify(img, m) for img, m in zip(s.images, s.metas, strict=True)]
        records = [
            {"filename": name, "tag": m["tag"], "prompt": m["prompt"], "correct": r.correct,
             "geneval_correct": r.geneval_correct, "score": r.score, "geneval_score": r.geneval_score,
             "exact_count": r.exact_count, "reason": "\n".join(r.reasons), "metadata": json.dumps(m), "seed": seed,
             "sample": k}
            for r, m, name, seed, k in zip(results, s.metas, names, s.seeds, s.sample_ids, strict=True)
        ]
        return records, info | {"score_s": time.perf_counter() - t0, "scores": toy_summarize(results, s.metas)}

    def format(self, summary: dict) -> str:
        from slas.toyworld.evaluate import format_table

        return format_table(summary)


class RewardSuite(Suite):
    """Any registered reward on the samples: its mean with a prompt-clustered 95% interval."""

    name = "reward"

    def run(self, opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[list[dict], dict]:
        from slas import rewards

        if not opts.reward:
            raise EvalError(f"--suite reward needs --reward NAME; registered: {rewards.available()}")
        options = {opts.reward: opts.reward_options} if opts.reward_options else {}
        score = rewards.build({opts.reward: 1.0}, opts.batch_size or 64, options)  # fails on a bad name/option before sampling
        s, info = _sample_for(opts, model, progress)
        names = _save_images(opts.out, s) if opts.save_images else [None] * len(s.metas)
        t0 = time.perf_counter()
        values = score(s.images, [m["prompt"] for m in s.metas], s.metas)[opts.reward]
        if not np.isfinite(values).all():
            raise EvalError(f"reward {opts.reward!r} returned {int((~np.isfinite(values)).sum())} NaN or infinite values")
        records = [
            {"filename": name, "tag": m.get("tag"), "prompt": m["prompt"], "reward": float(v), "metadata": json.dumps(m),
             "seed": seed, "sample": k}
            for v, m, name, seed, k in zip(values, s.metas, names, s.seeds, s.sample_ids, strict=True)
        ]
        return records, info | {"reward": opts.reward, "score_s": time.perf_counter() - t0}

    def summarize(self, records: list[dict], info: dict) -> dict:
        out = mean_ci([r["reward"] for r in records], [r["metadata"] for r in records])
        tags = [r["tag"] for r in records if r["tag"] is not None]
        if len(tags) == len(records):
            out["per_tag"] = {t: float(np.mean([r["reward"] for r in records if r["tag"] == t]))
                              for t in dict.fromkeys(tags)}
        return out

    def format(self, summary: dict) -> str:
        lo, hi = summary["ci95"]
        lines = [f"{'tag':<15}{'mean':>10}"] + [f"{t:<15}{v:>10.4f}" for t, v in summary.get("per_tag", {}).items()]
        lines.append(f"{'overall':<15}{summary['mean']:>10.4f} ± {(hi - lo) / 2:.4f} (95% CI [{lo:.4f}, {hi:.4f}]; "
                     f"{summary['n']} images, {summary['n_clusters']} prompts; reward {summary['reward']})")
        return "\n".join(lines)


class UniGenBenchSuite(Suite):
    """UniGenBench++ (slas.evals.unigenbench): a VLM judge's test points over natural-language prompts."""

    name = "unigenbench"

    def run(self, opts: EvalOptions, model: Model, progress: Progress | None) -> tuple[list[dict], dict]:
        from slas.evals import unigenbench as ugb

        judge = ugb.JudgeConfig.from_env(concurrency=opts.judge_concurrency)  # no judge: a clear error before any work
        if model.shapesworld:
            raise EvalError("--suite unigenbench needs a text-to-image model that reads natural language; a ShapesWorld "
                            "model reads only its own grammar")
        items = ugb.load_items(opts.unigenbench_split, opts.data_dir)
        if opts.max_prompts > 0:
            items = items[: opts.max_prompts]
        entries = [{"prompt": it.prompt, "seed": it.index} for it in items]
        n = opts.n_per_prompt or 4  # upstream generates 4 images per prompt
        steps = opts.steps or model.steps
        s = _sample(model, entries, n, 0, steps, opts.batch_size, progress)
        names = _save_images(opts.out, s) if opts.save_images else [None] * len(s.metas)
        per_item: list[list[np.ndarray]] = [[] for _ in items]
        for img, pid in zip(s.images, s.prompt_ids, strict=True):
            per_item[pid].append(img)
        bar = progress(len(s.images), "judging") if progress else None
        t0 = time.perf_counter()
        res = ugb.score_unigenbench(items, per_item, judge, opts.out / "judge_cache.jsonl", opts.data_dir,
                           progress=bar.update if bar else None)
        if bar:
            bar.close()
        by_key = {(v.index, v.image): v for v in res.verdicts}
        records = []
        for name, seed, pid, k in zip(names, s.seeds, s.prompt_ids, s.sample_ids, strict=True):
            v = by_key[(items[pid].index, k)]
            records.append({"filename": name, "index": items[pid].index, "prompt": items[pid].prompt, "seed": seed,
                            "sample": k, "testpoints": list(items[pid].testpoints), "scores": v.scores,
                            "status": v.status, "detail": v.detail})
        info = {"model": model.description, "unigenbench_split": opts.unigenbench_split, "n_prompts_sampled": len(items),
                "n_per_prompt": n, "steps": steps, "sampler": _sampler_name(model), "sample_s": s.seconds,
                "judge_model": judge.model, "n_requests": res.n_requests, "score_s": time.perf_counter() - t0}
        return records, info | {"scores": res.summary}

    def format(self, summary: dict) -> str:
        lines = [f"{'dimension':<24}{'score':>8}"]
        lines += [f"{k:<24}{v['score'] if isinstance(v, dict) else v:>8.1%}" for k, v in summary["primary"].items()]
        lines.append(f"{'overall':<24}{summary['overall']:>8.1%}")
        lines.append(f"malformed {summary['n_malformed']}, failed {summary['n_failed']} (left out of every score)")
        return "\n".join(lines)


SUITES: dict[str, Suite] = {x.name: x for x in (GenEvalSuite(), ToyWorldSuite(), RewardSuite(), UniGenBenchSuite())}


def _summary(suite: str, records: list[dict], info: dict) -> dict:
    summary: dict[str, Any] = {"suite": suite} | SUITES[suite].summarize(records, info)
    n_prompts = len({r.get("metadata", r.get("prompt")) for r in records})
    seconds = info.get("sample_s", 0.0) + info.get("score_s", 0.0)
    summary |= info | {"n_images": len(records), "seconds_per_prompt": seconds / n_prompts,
                       "seconds_per_image": seconds / len(records)}
    return summary


def run_suite(opts: EvalOptions, model: Model | None = None, progress: Progress | None = None) -> dict:
    """Evaluate, write ``opts.out/{results.jsonl, summary.json, images/}``, return the summary.

    ``model`` overrides ``opts.model`` (the CLI loads nothing itself; tests pass a model built in memory).
    """
    if opts.suite not in SUITES:
        raise EvalError(f"--suite must be one of {tuple(SUITES)}, got {opts.suite!r}")
    for name, value, low in (("--max-prompts", opts.max_prompts, 0), ("--images-per-tag", opts.images_per_tag, 0),
                             ("--n-per-prompt", opts.n_per_prompt or 1, 1), ("--steps", opts.steps or 1, 1),
                             ("--batch-size", opts.batch_size or 1, 1), ("--resolution", opts.resolution, 0)):
        if value < low:
            raise EvalError(f"{name} must be >= {low}, got {value}")
    held = [f for f in (SUMMARY_FILE, RESULTS_FILE) if (opts.out / f).is_file()]
    if held and not opts.overwrite:  # before any model loads
        raise EvalError(f"{opts.out} already holds a `slas eval` result ({held[0]}); choose another --out, or pass "
                        "--overwrite to replace it")
    if opts.images is not None:
        if opts.suite != "geneval" or model is not None or opts.model is not None:
            raise EvalError("--images (score existing images) works with --suite geneval and without --model")
    elif model is None:
        if opts.model is None:
            raise EvalError("give --model RUN_DIR|PIPELINE_DIR|CKPT_DIR|base (or --images DIR for --suite geneval)")
        if opts.suite == "unigenbench":  # the judge is checked before a model loads
            from slas.evals.unigenbench import JudgeConfig

            JudgeConfig.from_env()
        model = load_model(opts.model, opts.ema, opts.device, opts.resolution)
    if opts.shift is not None and model is not None:
        if model.shapesworld:
            raise EvalError("--shift: ShapesWorld models sample with shift 1, as `slas toyworld eval` and training do")
        if opts.shift <= 0:
            raise EvalError(f"--shift must be > 0, got {opts.shift}")
        model.shift = opts.shift
    opts.out.mkdir(parents=True, exist_ok=True)
    images = opts.out / IMAGES_DIR
    if opts.save_images and opts.images is None and images.exists():
        # a rerun into the same directory: stale images of a larger earlier run would be read back by --images
        if not (opts.out / SUMMARY_FILE).is_file():
            raise EvalError(f"{images} exists and is not the output of an earlier `slas eval`; choose another --out")
        shutil.rmtree(images)
    records, info = SUITES[opts.suite].run(opts, model, progress)
    summary = _summary(opts.suite, records, info)
    with (opts.out / RESULTS_FILE).open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (opts.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ----------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------


def format_summary(summary: dict) -> str:
    """The table ``slas eval`` prints."""
    return SUITES[summary["suite"]].format(summary)


# ----------------------------------------------------------------------------
# Compare
# ----------------------------------------------------------------------------


def load_results(folder: Path) -> tuple[dict, list[dict]]:
    """``summary.json`` and the records of ``results.jsonl`` of a ``slas eval`` output directory."""
    folder = Path(folder)
    s, r = folder / SUMMARY_FILE, folder / RESULTS_FILE
    if not s.is_file() or not r.is_file():
        raise EvalError(f"{folder}: not a `slas eval` output directory (needs {SUMMARY_FILE} and {RESULTS_FILE})")
    try:
        summary = json.loads(s.read_text())
        records = [json.loads(line) for line in r.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise EvalError(f"{folder}: unreadable results: {e}") from None
    return summary, records


def _key(r: dict) -> tuple[str, int]:
    return (r.get("metadata") or r["prompt"], r["sample"])


def compare_results(a_dir: Path, b_dir: Path, n_boot: int = 10_000, seed: int = 0) -> dict:
    """B versus A, image by image: per metric, each side's score, B - A and its 95% paired bootstrap interval
    (``stats.paired_bootstrap``: prompts resampled within tags, both sides of a prompt kept together).

    Both directories must hold the same suite over the same images (same prompts and sample numbers; same seeds when
    recorded), e.g. two models evaluated with the same flags.
    """
    (sa, ra), (sb, rb) = load_results(a_dir), load_results(b_dir)
    suite = sa["suite"]
    if sb["suite"] != suite:
        raise EvalError(f"cannot compare a {suite} result ({a_dir}) with a {sb['suite']} result ({b_dir})")
    if suite not in COMPARABLE:
        raise EvalError(f"--compare handles {sorted(COMPARABLE)} results, not {suite}")
    if suite == "reward" and sa.get("reward") != sb.get("reward"):
        raise EvalError(f"the two results score different rewards: {sa.get('reward')} and {sb.get('reward')}")
    ia, ib = {_key(r): r for r in ra}, {_key(r): r for r in rb}
    if len(ia) != len(ra) or len(ib) != len(rb):
        raise EvalError("a result file lists the same (prompt, sample) twice")
    if set(ia) != set(ib):
        raise EvalError(f"the results are not paired: {len(ia)} images in {a_dir}, {len(ib)} in {b_dir}, "
                        f"{len(set(ia) & set(ib))} in common; evaluate both with the same prompts and sampling flags")
    keys = list(ia)
    bad = [k for k in keys if None not in (ia[k].get("seed"), ib[k].get("seed")) and ia[k]["seed"] != ib[k]["seed"]]
    if bad:
        raise EvalError(f"{len(bad)} paired images were sampled with different seeds, e.g. {bad[0][0][:60]!r}")
    metrics, by_tag = COMPARABLE[suite]
    clusters = [k[0] for k in keys]
    strata = [ia[k]["tag"] for k in keys] if by_tag else None
    out = {"suite": suite, "a": str(a_dir), "b": str(b_dir), "a_model": sa.get("model"), "b_model": sb.get("model"),
           "n_images": len(keys), "n_prompts": len(set(clusters)),
           "method": f"paired cluster bootstrap over prompts{' within tags' if by_tag else ''}, {n_boot} replicates, "
                     f"seed {seed}, percentile 95% interval",
           "metrics": {}}
    for m in metrics:
        va, vb = [float(ia[k][m]) for k in keys], [float(ib[k][m]) for k in keys]
        r = paired_bootstrap(va, vb, clusters, strata, n_boot=n_boot, seed=seed)
        r["n"] = len(keys)
        binary = set(va) | set(vb) <= {0.0, 1.0}  # a proportion: each side gets its Wilson interval
        for v in [*r["per_stratum"].values(), r]:
            if binary:
                v["wilson_a"], v["wilson_b"] = list(wilson(v["a"] * v["n"], v["n"])), list(wilson(v["b"] * v["n"], v["n"]))
            v["resolved"] = v["n"] >= MIN_N and (v["ci95"][0] > 0 or v["ci95"][1] < 0)
        out["metrics"][m] = r
    return out


_METRIC_LABELS = {("geneval", "correct"): "GenEval accuracy (correct)",
                  ("toyworld", "correct"): "strict gold accuracy (correct)",
                  ("toyworld", "geneval_correct"): "GenEval rules (geneval_correct)",
                  ("reward", "reward"): "mean reward"}


def format_compare(cmp: dict) -> str:
    """The table of ``slas eval --compare``: per tag and overall, n, each side (an accuracy with its Wilson 95%
    interval), and B - A with its paired bootstrap interval; below ``stats.MIN_N`` images "n too small" instead of
    a difference, and "not resolved" when the interval holds 0."""
    fmt = (lambda v: f"{v:.1%}") if cmp["suite"] != "reward" else (lambda v: f"{v:.4f}")
    lines = [f"A = {cmp['a']} ({cmp['a_model']})", f"B = {cmp['b']} ({cmp['b_model']})"]
    for metric, r in cmp["metrics"].items():
        label = _METRIC_LABELS.get((cmp["suite"], metric), metric)
        lines.append(f"\n{label}: {cmp['n_images']} paired images, {cmp['n_prompts']} prompts")
        wide = "wilson_a" in r
        side = 24 if wide else 9
        lines.append(f"{'':<15}{'n':>6}  {'A' + (' (95% Wilson)' if wide else ''):<{side}} "
                     f"{'B' + (' (95% Wilson)' if wide else ''):<{side}} {'B - A':>8}   95% CI (paired)")
        rows = list(r["per_stratum"].items()) if len(r["per_stratum"]) > 1 else []
        for name, v in rows + [("overall", r)]:
            n = v.get("n", cmp["n_images"])
            sides = [fmt(v[s]) + (f" [{fmt(v['wilson_' + s][0])}, {fmt(v['wilson_' + s][1])}]" if wide else "")
                     for s in "ab"]
            head = f"{name:<15}{n:>6}  {sides[0]:<{side}} {sides[1]:<{side}} "
            lo, hi = v["ci95"]
            diff = ("+" if v["diff"] > 0 else "") + fmt(v["diff"])
            if n < MIN_N:  # a bootstrap over a handful of images is degenerate (e.g. [0.0%, 0.0%] at n = 4)
                lines.append(head + f"{'':>8}   n too small (< {MIN_N}): not resolved")
            elif lo > 0 or hi < 0:
                lines.append(head + f"{diff:>8}   [{fmt(lo)}, {fmt(hi)}] *")
            else:
                lines.append(head + f"{diff:>8}   [{fmt(lo)}, {fmt(hi)}] not resolved")
    lines.append(f"\n* the interval excludes 0. {cmp['method']}. Below {MIN_N} images no difference is shown.")
    return "\n".join(lines)
