"""``run_suite``: one ``slas eval`` request checked, its model loaded, its suite run, its results written."""

from __future__ import annotations

import json
import shutil
from typing import Any

from slas.apps.eval.models import Model, load_model
from slas.apps.eval.options import IMAGES_DIR, RESULTS_FILE, SUMMARY_FILE, EvalError, EvalOptions, Progress
from slas.apps.eval.suites import SUITES


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
    # None = the option's default; a given 0 is refused, not read as "the default" (`--steps 0` sampled 20 steps)
    for name, value, low in (("--max-prompts", opts.max_prompts, 0), ("--images-per-tag", opts.images_per_tag, 0),
                             ("--n-per-prompt", opts.n_per_prompt, 1), ("--steps", opts.steps, 1),
                             ("--batch-size", opts.batch_size, 1), ("--resolution", opts.resolution, 0)):
        if value is not None and value < low:
            raise EvalError(f"{name} must be >= {low}, got {value}")
    held = [f for f in (SUMMARY_FILE, RESULTS_FILE) if (opts.out / f).is_file()]
    if held and not opts.overwrite:  # before any model loads
        raise EvalError(f"{opts.out} already holds a `slas eval` result ({held[0]}); choose another --out, or pass "
                        "--overwrite to replace it")
    from slas.toyworld.evaluate import MAX_SEED

    if isinstance(opts.seed, bool) or not isinstance(opts.seed, int) or not 0 <= opts.seed <= MAX_SEED:
        raise EvalError(f"--seed must be an integer in [0, {MAX_SEED}] (it offsets the evaluation noise), got "
                        f"{opts.seed!r}")
    if opts.images is not None:
        if opts.suite != "geneval" or model is not None or opts.model is not None:
            raise EvalError("--images (score existing images) works with --suite geneval and without --model")
        if opts.seed:
            raise EvalError("--seed offsets the noise of the images slas eval samples; --images scores images that "
                            "exist already")
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


def format_summary(summary: dict) -> str:
    """The table ``slas eval`` prints."""
    return SUITES[summary["suite"]].format(summary)
