"""One ``slas eval`` request (``EvalOptions``: the CLI's flags), its user errors, and the names of what it writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# what every run writes into its output directory: one record per image, the scores and settings, the images
RESULTS_FILE, SUMMARY_FILE, IMAGES_DIR = "results.jsonl", "summary.json", "images"


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
    """Flow time shift of a diffusers velocity backbone's ODE; None = the run's eval.shift, or the shift the stock
    pipeline samples with (``slas.policy.generate.sampling_shift``: FLUX.1-dev's dynamic one at the resolution).
    ShapesWorld models always sample with 1 (as ``slas toyworld eval``)."""
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
    seed: int = 0
    """Evaluation noise: S in [0, 15] adds S x 2^27 to every image's seed (``toyworld.evaluate.plan``), the same prompts
    under fresh noise; 0 = the seeds every evaluation so far used."""
    overwrite: bool = False
    """Replace the result already in ``out`` (else an ``out`` that holds one is refused, as ``slas train`` refuses
    a run directory that holds a run)."""
