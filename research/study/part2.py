"""Part 2's text: the default recipe (DiffusionNFT) on the strict gold reward, under awm, under the hackable
proxies, per model size with L's step-size and shape probes, and the verdicts, in that order."""

from __future__ import annotations

from pathlib import Path

from .contrasts import GOLD_CONTRAST_KEYS, HACK_CONTRAST_KEYS, gamma_line, matched_line, push_line
from .gold_tables import (
    gold_arm_table,
    gold_paired_table,
    gold_scale_stability_table,
    gold_scale_table,
    gold_tag_table,
    scale_pairs,
    stability_arm_table,
)
from .proxy_tables import arm_table, hack_scale_table, hack_table, paired_table, probe_table
from .runs import (
    GAMMAS,
    MATCHED,
    PART2,
    PART2_AWM,
    PART2_HACK_SCALE,
    PART2_PROBE,
    PART2_PROXY,
    PART2_SCALE,
    PART2_SCALE_STEP,
    SCALE_PROBES,
    SLAS_STEP,
    detail_arms,
    load_runs,
    reward_label,
)
from .stats import contrast, run_stats
from .verdicts import claim_lines, gold_verdicts, hack_verdict, scale_verdict


def part2(root: Path, runs: dict[str, dict[str, dict[int, list[dict]]]], patience: int = 3) -> list[str]:
    """Every part-2 table and verdict from ``runs`` (``part2_runs``); ``patience``: the monitor early-stop rule
    replayed in the hacking tables."""
    arms = runs["gold"]
    order = ["grpo", "slas", "drgrpo", "grpo_global_std", "slas-gamma0.5", "slas-gamma2", MATCHED]
    order += sorted(a for a in arms if a not in order)
    out, verdicts = [], []
    if arms:
        out += ["## Part 2: the default recipe (DiffusionNFT) on the strict gold reward", "",
                *gold_arm_table(arms, order), "", "### Paired differences against DanceGRPO's estimator (same seeds)",
                "", *gold_paired_table(arms, order), "", matched_line(arms, GOLD_CONTRAST_KEYS), "",
                gamma_line(arms, GOLD_CONTRAST_KEYS), "",
                push_line(root, PART2, arms, order), "",
                "### Held-out strict accuracy per tag: change from iteration 0", "", *gold_tag_table(arms, order), ""]
        verdicts += gold_verdicts(arms)
    details = detail_arms(arms)
    if details:  # one option at a time against slas at its defaults
        out += ["### SLAS's open details: paired differences against slas at its defaults", "",
                *gold_paired_table(arms, ["slas", *details], ref="slas"), ""]
    other = [a for a in GAMMAS if a != "slas" and a in arms and "grpo" in arms]
    if other:  # the same claims at the sweep's other gammas: is a verdict a property of gamma 1 only?
        out += ["### The gold-reward claims at the other gammas (against DanceGRPO, paired)", "",
                *claim_lines([v for a in other for v in gold_verdicts(arms, arm=a, label=a.removeprefix("slas-"))])]
    awm = runs["awm"]
    if awm:
        out += [f"### Part 2 under the other forward-process objective: awm ({PART2_AWM})", "",
                *gold_arm_table(awm, ["grpo", "slas"]), "", *gold_paired_table(awm, ["grpo", "slas"]), "",
                "Held-out strict accuracy per tag under awm: change from iteration 0", "",
                *gold_tag_table(awm, ["grpo", "slas"]), ""]
        verdicts += gold_verdicts(awm, label="awm")
    probe = load_runs(root, [PART2_PROBE])
    if probe:
        out += [f"### Part 2 under a hackable proxy: the strength probe ({PART2_PROBE})", "", *probe_table(probe, patience), ""]
    for part in PART2_PROXY:
        hack = runs[part]
        if not hack:
            continue
        label = reward_label(root, part)
        hack_order = ["grpo", "slas"] + [a for a in order if a in hack and a not in ("grpo", "slas")]
        hack_order += sorted(a for a in hack if a not in hack_order)
        out += [f"### Part 2 under a hackable proxy: {label} ({part})", "", *arm_table(hack, hack_order), "",
                "Paired differences against DanceGRPO's estimator (same seeds):", "",
                *paired_table(hack, hack_order), "", matched_line(hack, HACK_CONTRAST_KEYS, run_stats), "",
                gamma_line(hack, HACK_CONTRAST_KEYS, run_stats), "",
                push_line(root, PART2_PROXY[part], hack, hack_order), ""]
        for arm in hack_order[:2]:
            out += [f"Per seed, {arm}:", "", *hack_table(hack, arm, patience), ""]
        verdicts.append(hack_verdict(hack, label))
    sizes = scale_pairs(root, PART2_SCALE, runs["scale"])
    if sizes:
        out += ["### Part 2 per model size (gold reward; M is the main comparison)", "", *gold_scale_table(sizes), "",
                "Does training hold its gains, per size:", "", *gold_scale_stability_table(sizes), ""]
    for size, part in PART2_SCALE.items():
        arms, parts = runs["scale"][part], [part, *PART2_SCALE_STEP.get(part, [])]
        step = [a for a in SCALE_PROBES if a in arms]
        if part in PART2_SCALE_STEP and step and {"grpo", "slas"} <= set(arms):  # the step, or which part of the shape?
            order = ["grpo", "slas", *step]
            push = push_line(root, parts, arms, order)
            out += [f"Step size and shape on {size} ({', '.join(parts[1:])}, paired with {part}'s seeds):", "",
                    *stability_arm_table(arms, order), "", *([push, ""] if push else [])]
            if MATCHED in arms:
                out += [matched_line(arms, GOLD_CONTRAST_KEYS), ""]
            if SLAS_STEP in arms:
                out += [f"SLAS at DanceGRPO's step size: {SLAS_STEP} − slas: "
                        f"{contrast(arms, SLAS_STEP, 'slas', GOLD_CONTRAST_KEYS)}; {SLAS_STEP} − grpo: "
                        f"{contrast(arms, SLAS_STEP, 'grpo', GOLD_CONTRAST_KEYS)}.", ""]
    verdicts.append(scale_verdict(sizes))
    hack_sizes = scale_pairs(root, PART2_HACK_SCALE, runs["scale"], run_stats)
    if hack_sizes:
        label = reward_label(root, PART2_HACK_SCALE[next(iter(hack_sizes))])  # the smallest size's runs
        out += [f"### Part 2 per model size under {label} (M is part2_hack)", "", *hack_scale_table(hack_sizes), ""]
        verdicts.append(scale_verdict(hack_sizes, label, "peak_gap", -1, "peak hacking gap", 1, 3, ""))
    if not any(runs[part] for part in PART2_PROXY):
        verdicts.append("3. less reward hacking: not tested in part 2 (no proxy runs)")
    verdicts.sort(key=lambda v: int(v.split(".")[0]))  # claims in the paper's order (stable within one claim)
    return out + ["### Verdicts (SLAS − DanceGRPO, paired 95% t intervals)", "", *claim_lines(verdicts)]
