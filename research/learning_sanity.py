"""Does the GRPO engine learn at all? Train on an easy reward (mean brightness).

A reward that any colour shift can raise separates "the engine is broken" from
"the reward is hard". Prints the train reward per iteration.

    .venv/bin/python research/learning_sanity.py runs/sanity train.lr=3e-4 train.clip_range=1e-3
"""

from __future__ import annotations

import sys

from slas import rewards
from slas.config import load_config
from slas.recipe.metrics import read_metrics
from slas.recipe.train import train


@rewards.register("brightness")
def _brightness():
    return lambda images, prompts, metas: images.reshape(len(images), -1).mean(1) / 255.0


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out, overrides = sys.argv[1], sys.argv[2:]
    cfg = load_config(None, ["reward.weights={brightness: 1.0}", "train.iterations=12", "eval.every=0",
                             "eval.images_per_tag=4", f"run.out_dir={out}", *overrides])
    train(cfg, progress=False, log=lambda s: None)
    for r in read_metrics(out)[1:]:
        print(f"iteration {r['iteration']:3d}  brightness {r['train/reward_mean']:.4f}  clipfrac {r['train/clipfrac']:.3f}")


if __name__ == "__main__":
    main()
