"""SLAS vs DanceGRPO vs Dr.GRPO on the default ShapesWorld recipe, several seeds: a thin wrapper of `slas compare`.

The shipped configs `configs/toy_{slas,nft_grpo,drgrpo}.yaml` differ only in the advantage estimator, so this is

    slas compare --config configs/toy_slas.yaml --methods slas,grpo,drgrpo --seeds 0,1,2 --out runs/compare

plus a copy of its `summary.md` (held-out gold base/final/best, exact count, GenEval rules, the gold at each
evaluation, and the hacking monitor's table) to `--md`. Runs go to `OUT/runs/<method>_s<seed>` (the earlier
version of this script wrote `OUT/<config>_s<seed>`; those directories are not reused).

    .venv/bin/python research/compare_estimators.py --seeds 0 1 2 [--out runs/compare] [--md docs/compare_toy.md] \
        [--jobs N] [overrides...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from slas.apps.compare import compare
from slas.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["toy_slas", "toy_nft_grpo", "toy_drgrpo"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=CONFIGS, help="shipped configs (configs/NAME.yaml) that differ "
                                                                  "from configs/toy_slas.yaml only in the estimator")
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--md", default=None, help="also copy summary.md to this path")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    base = ROOT / "configs" / "toy_slas.yaml"
    methods = [load_config(ROOT / "configs" / f"{name}.yaml").advantage.estimator for name in args.configs]
    res = compare(str(base), methods, args.seeds, args.out, overrides=args.overrides, jobs=args.jobs,
                  command=f"research/compare_estimators.py --seeds {' '.join(map(str, args.seeds))}")
    print((Path(args.out) / "summary.md").read_text())
    if args.md:
        shutil.copyfile(Path(args.out) / "summary.md", args.md)
    if res.failed:
        raise SystemExit(f"runs that did not finish: {res.failed}")


if __name__ == "__main__":
    main()
