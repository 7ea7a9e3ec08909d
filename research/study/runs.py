"""The study's layout: its parts (``OUT/<part>/``, one ``slas compare`` each, research/study.sh) and arms, and the
loaders of their finished runs (``load_runs``, ``part2_runs``) and of what the runs' configs say (model size,
training reward)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from slas.apps.compare.planning import GRIDS, RUNS
from slas.config import load_config
from slas.recipe.metrics import read_metrics
from slas.recipe.run_dir import RunDir
from slas.toyworld.model import resolve_checkpoint

PARTS = ["main", "gamma", "recenter", "normalize", "batch_std_of"]
PART2 = ["part2_main", "part2_estimators", "part2_gamma",  # part 2: the default recipe (nft) on the strict gold reward
         "part2_normalize", "part2_batch_std_of", "part2_recenter", "part2_drop_zero",  # and SLAS's open details,
         "part2_matched"]  # and DanceGRPO's estimator at SLAS's step size (MATCHED)
PART2_PROBE = "part2_hack_probe"  # part 2: DanceGRPO's estimator on toy_biased at a few strengths, one seed
# part 2 under a hackable proxy: toy_biased at the chosen strength (with the gold part's other arms), toy_pref
PART2_PROXY = {"part2_hack": ["part2_hack", "part2_hack_estimators", "part2_hack_gamma", "part2_hack_matched"],
               "part2_pref": ["part2_pref", "part2_pref_matched"]}
PART2_SCALE = {"S": "part2_scale_S", "M": "part2_main", "L": "part2_scale_L"}  # part 2 on the gold reward per size
# a size's step-size arms on the gold reward (MATCHED and SLAS_STEP on that size; M's control is part2_matched) and
# grpo_global_std (SLAS's batch std without its power), merged into its part
PART2_SCALE_STEP = {"part2_scale_L": ["part2_scale_L_matched", "part2_scale_L_slas_step", "part2_scale_L_global_std"]}
PART2_HACK_SCALE = {"S": "part2_hack_scale_S", "M": "part2_hack", "L": "part2_hack_scale_L"}  # and under toy_biased
PART2_AWM = "part2_awm"  # the main arms under the other forward-process objective (configs/toy_awm_slas.yaml)
# DanceGRPO's estimator with nft's r_scale 5 -> 4: its r moves 1.25x as far from 1/2 at the same advantages, as SLAS's
# do at its defaults (1.24x, research/slas_options.py): a step-size control for SLAS's differences
MATCHED = "grpo-r_scale4"
SLAS_STEP = "slas-r_scale6.2"  # and the converse: SLAS with nft's r_scale 5 -> 6.2 (5 x 1.24), r moving as DanceGRPO's
SCALE_PROBES = (MATCHED, SLAS_STEP, "grpo_global_std")  # PART2_SCALE_STEP's arms: the step size and the shape
# the scale comparison: the same config and arms (slas, grpo) on each model size; M is the main part
SCALE_PARTS = {"S": "scale_S", "M": "main", "L": "scale_L"}
GAMMAS = ["slas-gamma0.5", "slas", "slas-gamma2"]  # the power 1 + gamma at gamma 0.5, 1 (slas's default), 2
GAMMA_AXIS = ["grpo_global_std", *GAMMAS]  # grpo_global_std: the linear end (gamma 0 with the batch std of rewards)
ESTIMATORS = ["grpo", "drgrpo", "grpo_global_std", "slas"]


def detail_arms(arms: dict) -> list[str]:
    """SLAS's open-detail arms (``slas-<option><value>``, one option changed from the defaults), gamma's aside."""
    return sorted(a for a in arms if a.startswith("slas-") and "gamma" not in a)


def load_runs(root: Path, parts: list[str] = PARTS) -> dict[str, dict[int, list[dict]]]:
    """arm -> seed -> metrics rows, for the finished runs; unfinished ones are reported on stderr."""
    arms: dict[str, dict[int, list[dict]]] = {}
    origin: dict[str, str] = {}
    for part in parts:
        for run in sorted((root / part / RUNS).glob("*_s*")):
            m = re.fullmatch(r"(.+)_s(\d+)", run.name)
            paths = RunDir(run)
            cfg = paths.config
            if not m or not paths.metrics.is_file() or not cfg.is_file():
                continue
            rows = read_metrics(run)
            want = load_config(cfg).train.iterations
            if not rows or rows[-1]["iteration"] < want:
                print(f"unfinished: {part}/{run.name} ({rows[-1]['iteration'] if rows else 0}/{want})",
                      file=sys.stderr)
                continue
            arm = m.group(1)
            if origin.setdefault(arm, part) != part:  # an arm belongs to the first part that ran it
                print(f"skipped: {part}/{run.name} ({arm} comes from {origin[arm]}/)", file=sys.stderr)
                continue
            arms.setdefault(arm, {})[int(m.group(2))] = rows
    return arms


def part2_runs(root: Path) -> dict[str, dict[str, dict[int, list[dict]]]]:
    """The finished part-2 runs the tables and the figures share, read once: ``gold`` (PART2), ``awm`` (PART2_AWM)
    and each proxy part (PART2_PROXY's keys, with their extra arms merged), and ``scale``: part -> its own runs for
    each part of PART2_SCALE and PART2_HACK_SCALE (with a size's step-size arms, PART2_SCALE_STEP)."""
    gold = load_runs(root, PART2)
    proxy = {part: load_runs(root, parts) for part, parts in PART2_PROXY.items()}
    # M's scale parts are the first parts of gold and of a proxy, whose arms they own (load_runs' first-part rule)
    first = {PART2[0]: gold} | {parts[0]: proxy[part] for part, parts in PART2_PROXY.items()}
    scale = {p: first[p] if p in first else load_runs(root, [p, *PART2_SCALE_STEP.get(p, [])])
             for p in (*PART2_SCALE.values(), *PART2_HACK_SCALE.values())}
    if not gold and not any(scale.values()):  # a scale part alone (e.g. only L rerun) still prints its rows
        sys.exit(f"no finished part-2 runs under {root} (parts {PART2 + [p for p in scale if p not in PART2]}); run "
                 f"`bash research/study.sh {root} part2`")
    return {"gold": gold, "awm": load_runs(root, [PART2_AWM]), "scale": scale} | proxy


def model_params(root: Path, part: str) -> int | None:
    """Parameter count of the model a part's runs trained (from its checkpoint's config.json)."""
    for cfg in configs(root, part):
        info = resolve_checkpoint(load_config(cfg).model.checkpoint) / "config.json"
        if info.is_file():
            return json.loads(info.read_text()).get("n_params")
    return None


def reward_label(root: Path, part: str) -> str:
    """The training reward of a part's runs, as its config names it (``toy_biased`` (lam 4))."""
    for cfg in configs(root, part):
        r = load_config(cfg).reward
        return ", ".join(f"`{k}`" + (" (" + ", ".join(f"{o} {v:g}" if isinstance(v, float) else f"{o} {v}"
                                                      for o, v in r.options[k].items()) + ")" if r.options.get(k) else "")
                         for k in r.weights)
    return "?"


def configs(root: Path, part: str, pattern: str = "*") -> list[Path]:
    """The config files of a part's runs whose directory name matches ``pattern``, in name order."""
    return sorted(RunDir(d).config for d in (root / part / RUNS).glob(pattern) if RunDir(d).config.is_file())


def grids(root: Path, part: str) -> list[Path]:
    """A part's side-by-side sample grids (``slas compare``'s ``grids/iter_NNNNNN.png``), in iteration order."""
    return sorted((root / part / GRIDS).glob("iter_*.png"))
