"""Part 1's text: the estimators under PPO on the SDE (configs/toy_hack.yaml), SLAS's ablations, and the model-scale
comparison, in that order."""

from __future__ import annotations

from pathlib import Path

from slas.apps.compare.planning import RUNS

from .proxy_tables import arm_table, hack_table, paired_table, scale_table, tag_table
from .runs import SCALE_PARTS

MAIN_ORDER = ["grpo", "slas", "drgrpo", "grpo_global_std"]
# grpo_global_std is the linear end of the gamma axis (SLAS at gamma 0 with batch_std_of=rewards)
ABLATION = ["grpo_global_std", "slas-gamma0.5", "slas", "slas-gamma2", "slas-recenterTrue", "slas-normalizeafter",
            "slas-batch_std_ofrewards"]


def ablation_order(arms: dict) -> list[str]:
    """ABLATION, then any other swept arm found."""
    return ABLATION + sorted(a for a in arms if a not in MAIN_ORDER + ABLATION)


def has_scale(root: Path) -> bool:
    """Whether a part of the scale comparison other than the main one ran."""
    return any((root / p / RUNS).is_dir() for p in SCALE_PARTS.values() if p != "main")


def part1(root: Path, arms: dict[str, dict[int, list[dict]]]) -> list[str]:
    """Every part-1 table from ``arms`` (``load_runs``), and the scale comparison's where one of its parts ran."""
    ablation = ablation_order(arms)
    out = [] if not arms else ["## Estimators (configs/toy_hack.yaml)", "", *arm_table(arms, MAIN_ORDER), "",
           "### Paired differences against DanceGRPO (same seeds)", "", *paired_table(arms, MAIN_ORDER), "",
           "### SLAS against the linear batch-std estimator (what the power adds)", "",
           *paired_table(arms, ["slas"], ref="grpo_global_std"), "",
           "### Does DanceGRPO hack reliably?", "", *hack_table(arms), "",
           "### Held-out strict accuracy per tag at the end (%)", "", *tag_table(arms, MAIN_ORDER), "",
           "## SLAS ablations (gamma and the undetermined options)", "", *arm_table(arms, ablation), "",
           "### Paired differences against SLAS at its defaults", "", *paired_table(arms, ablation, ref="slas")]
    if has_scale(root):  # a part of the scale comparison alone (e.g. only scale_L rerun) prints its rows
        out += ["", "## Model scale: SLAS vs DanceGRPO on S, M and L (same config)", "", *scale_table(root)]
    return out
