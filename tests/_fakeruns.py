"""Run directories written by hand, as `slas train` leaves them, for the tests of `slas report`."""

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def make_run(root: Path, name: str, lr: float, rewards: list[float], evals: dict[int, float],
             estimator: str = "slas") -> Path:
    """A run directory as ``slas train`` writes it: config.yaml, metrics.jsonl, samples/iter_*.png."""
    run = root / name
    (run / "samples").mkdir(parents=True)
    cfg = {"advantage": {"estimator": estimator}, "train": {"lr": lr, "group_size": 8},
           "eval": {"grid_prompts": ["a photo of three circles", "a photo of a white circle"]}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = []
    for it, r in enumerate(rewards):
        row = {"iteration": it, "train/reward_mean": r, "train/lr": lr}
        if it in evals:
            row |= {"eval/gold_accuracy": evals[it], "eval/strict/counting": evals[it] / 2}
        rows.append(json.dumps(row))
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(len(name))
    for it in evals:  # a different grid per evaluation, as training changes the samples
        img = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
        Image.fromarray(img).save(run / "samples" / f"iter_{it:06d}.png")
    return run
