"""Extra wall time of the reward-hacking monitor per evaluation of the default recipe (docs/hacking.md).

Runs ShapesWorld's evaluation during training (``slas.toyworld.plugin.ShapesWorld.evaluate``: the held-out split, the
sample grid, and the monitor) on the shipped base model with the default config, alternating ``monitor.enabled``
true and false, and prints the mean time of each, the monitor's own ``time/monitor_s``, and its metrics on the base model.

    .venv/bin/python benchmarks/monitor_cost.py [--repeats 2] [--threads 2] [overrides...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slas import rewards
from slas.config import load_config
from slas.plugins import get_world
from slas.recipe.builders import build_backbone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="e.g. reward.weights={toy_pref: 1.0}")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    times: dict[bool, list[float]] = {True: [], False: []}
    own = []
    stats: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for enabled in (True, False) if rep % 2 == 0 else (False, True):  # alternate the order: load drifts
                cfg = load_config(None, [*args.overrides, f"monitor.enabled={str(enabled).lower()}"])
                backbone = build_backbone(cfg)
                run = Path(tmp) / f"run_{enabled}"
                run.mkdir(exist_ok=True)
                with torch.no_grad():
                    t0 = time.perf_counter()
                    out = get_world(cfg.data.world).evaluate(backbone, cfg, run, 0, score_fn=rewards.build(
                        cfg.reward.weights, cfg.reward.batch_size, cfg.reward.options), history=[])
                    times[enabled].append(time.perf_counter() - t0)
                if enabled:
                    own.append(out["time/monitor_s"])
                    stats = {k: v for k, v in out.items() if k.startswith("monitor/")}
    on, off = np.mean(times[True]), np.mean(times[False])
    print("monitor at iteration 0 (base model): " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    print(f"threads {args.threads}, {args.repeats} repeats: evaluation {off:.1f} s without the monitor, {on:.1f} s with "
          f"it (+{on - off:.1f} s); the monitor's own time/monitor_s {np.mean(own):.1f} s")


if __name__ == "__main__":
    main()
