"""Part 2's tables on the strict gold reward, from ``gold_stats``: per arm, paired against a reference arm by seed,
the per-tag change, and per model size (``scale_pairs``): SLAS against DanceGRPO, and whether training holds its
gains."""

from __future__ import annotations

import math
from pathlib import Path

from .runs import model_params
from .stats import DROP, TAGS, fell_back, fmt, gold_stats

GOLD_COLS = [  # key, header, scale, digits, signed
    ("final_heldout", "held-out % (final)", 100, 1, False), ("d_heldout", "Δ held-out (pts)", 100, 1, True),
    ("final_id", "in-domain % (final)", 100, 1, False), ("d_id", "Δ in-domain (pts)", 100, 1, True),
    ("to_5", "iterations to +5", 1, 0, False), ("to_10", "iterations to +10", 1, 0, False),
    ("auc", "mean held-out gain over the run (pts)", 100, 1, True),
    ("auc_id", "mean in-domain gain over the run (pts)", 100, 1, True),
    ("d_exact_count", "Δ exact count (pts)", 100, 1, True), ("d_debris", "Δ debris (pts)", 100, 1, True),
]


def _cell(values: list[float], sc: float, d: int, sg: bool, key: str) -> str:
    text = fmt(values, sc, d, sg)
    if key.startswith("to_"):
        text += f" ({sum(math.isfinite(v) for v in values)}/{len(values)} reached)"
    return text


def gold_arm_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    lines = ["| arm | seeds | " + " | ".join(h for _, h, *_ in GOLD_COLS) + " |", "|---" * (len(GOLD_COLS) + 2) + "|"]
    for arm in order:
        if arm in arms:
            stats = [gold_stats(r) for _, r in sorted(arms[arm].items())]
            cells = [_cell([st[k] for st in stats], sc, d, sg, k) for k, _, sc, d, sg in GOLD_COLS]
            lines.append(f"| {arm} | {len(stats)} | " + " | ".join(cells) + " |")
    return lines


def gold_paired_table(arms: dict[str, dict[int, list[dict]]], order: list[str], ref: str = "grpo") -> list[str]:
    cols = [c for c in GOLD_COLS if c[0] not in ("final_id", "final_heldout")]
    lines = [f"| arm − {ref} | pairs | " + " | ".join(h for _, h, *_ in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for arm in order:
        if arm == ref or arm not in arms or ref not in arms:
            continue
        seeds = sorted(set(arms[arm]) & set(arms[ref]))
        a = {s: gold_stats(arms[arm][s]) for s in seeds}
        b = {s: gold_stats(arms[ref][s]) for s in seeds}
        cells = [fmt([a[s][k] - b[s][k] for s in seeds], sc, d, True) for k, _, sc, d, _ in cols]
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def gold_tag_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    lines = ["| arm | " + " | ".join(TAGS) + " |", "|---" * (len(TAGS) + 1) + "|"]
    for arm in order:
        if arm in arms:
            stats = [gold_stats(r) for _, r in sorted(arms[arm].items())]
            lines.append(f"| {arm} (change from iteration 0, pts) | "
                         + " | ".join(fmt([st[f"d_tag_{t}"] for st in stats], 100, 1, True) for t in TAGS) + " |")
    return lines


def scale_pairs(root: Path, parts: dict[str, str], loaded: dict[str, dict[str, dict[int, list[dict]]]],
                stats=gold_stats) -> dict[str, dict]:
    """size -> {params, seeds, both arms' ``stats`` per paired seed, slas's and grpo's rows}, for the sizes of
    ``parts`` (size -> part) with finished slas and grpo runs; ``loaded``: part -> its runs (``part2_runs``'s
    ``scale``), read once."""
    out = {}
    for size, part in parts.items():
        arms = loaded[part]
        seeds = sorted(set(arms.get("slas", {})) & set(arms.get("grpo", {})))
        if seeds:
            out[size] = {"params": model_params(root, part), "seeds": seeds,
                         "slas": [stats(arms["slas"][s]) for s in seeds],
                         "grpo": [stats(arms["grpo"][s]) for s in seeds],
                         "rows": {arm: [arms[arm][s] for s in seeds] for arm in ("grpo", "slas")}}
    return out


def gold_scale_table(sizes: dict[str, dict]) -> list[str]:
    lines = ["| model | parameters | pairs | base held-out % | grpo Δ held-out (pts) | slas Δ held-out (pts) "
             "| slas − grpo: Δ held-out (pts) | mean held-out gain over the run (pts) | Δ in-domain (pts) "
             "| Δ exact count (pts) |", "|---" * 10 + "|"]
    for size, x in sizes.items():
        def diff(k: str, x: dict = x) -> str:
            return fmt([a[k] - b[k] for a, b in zip(x["slas"], x["grpo"], strict=True)], 100, 1, True)

        base = [b["final_heldout"] - b["d_heldout"] for b in x["grpo"]]
        n = x["params"]
        lines.append(f"| {size} | {f'{n:,}' if n else '?'} | {len(x['seeds'])} | {fmt(base, 100, 1)} "
                     f"| {fmt([b['d_heldout'] for b in x['grpo']], 100, 1, True)} "
                     f"| {fmt([a['d_heldout'] for a in x['slas']], 100, 1, True)} | {diff('d_heldout')} "
                     f"| {diff('auc')} | {diff('d_id')} | {diff('d_exact_count')} |")
    return lines


def gold_scale_stability_table(sizes: dict[str, dict]) -> list[str]:
    """Per size on the gold reward: does training hold its gains? The change of debris (images with a stray
    component) and how far the training reward (the gold itself) fell back from its best 10-iteration mean."""
    lines = ["| model | pairs | grpo Δ debris (pts) | slas Δ debris (pts) | slas − grpo: Δ debris (pts) "
             "| grpo training reward: fall from its best | slas: fall from its best | seeds that fell back "
             f"more than {DROP} (grpo, slas) |", "|---" * 8 + "|"]
    for size, x in sizes.items():
        def arm(a: str, k: str, sc: float, d: int, signed: bool, x: dict = x) -> str:
            return fmt([r[k] for r in x[a]], sc, d, signed)

        diff = fmt([a["d_debris"] - b["d_debris"] for a, b in zip(x["slas"], x["grpo"], strict=True)], 100, 1, True)
        fell = ", ".join(fell_back(x[a]) for a in ("grpo", "slas"))
        lines.append(f"| {size} | {len(x['seeds'])} | {arm('grpo', 'd_debris', 100, 1, True)} "
                     f"| {arm('slas', 'd_debris', 100, 1, True)} | {diff} | {arm('grpo', 'reward_drop', 1, 3, False)} "
                     f"| {arm('slas', 'reward_drop', 1, 3, False)} | {fell} |")
    return lines


def stability_arm_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    """The stability columns per arm of ``order`` on the seeds all of them have (a size's step-size and shape
    probes: which of them fall back as slas does?)."""
    seeds = sorted(set.intersection(*(set(arms[a]) for a in order)))
    lines = ["| arm | seeds | Δ held-out (pts) | Δ debris (pts) | training reward: fall from its best "
             f"| seeds that fell back more than {DROP} |", "|---" * 6 + "|"]
    for a in order:
        x = [gold_stats(arms[a][s]) for s in seeds]
        lines.append(f"| {a} | {', '.join(map(str, seeds))} | {fmt([r['d_heldout'] for r in x], 100, 1, True)} "
                     f"| {fmt([r['d_debris'] for r in x], 100, 1, True)} | {fmt([r['reward_drop'] for r in x])} "
                     f"| {fell_back(x)} |")
    return lines
