"""The tables under a hackable proxy, from ``run_stats``: part 1 (PPO on the SDE, configs/toy_hack.yaml) and part
2's proxy parts: per arm, paired against a reference arm by seed, DanceGRPO's hacking per seed, the per-tag accuracy,
the strength probe, and SLAS against DanceGRPO per model size."""

from __future__ import annotations

import math
from pathlib import Path

from slas.evals.stats import t_interval
from slas.recipe.metrics import series

from .runs import SCALE_PARTS, load_runs, model_params
from .stats import EARLY, TAGS, fmt, is_hacked, iteration_text, run_stats, stop_iteration

COLS = [  # key, header, scale, digits, signed
    ("early_reward", f"train reward, it. 1–{EARLY}", 1, 3, False),
    ("late_reward", f"train reward, last {EARLY}", 1, 3, False),
    ("proxy_gain", "proxy rise (ID)", 1, 3, True),
    ("final_ood", "final gold OOD %", 100, 1, False),
    ("d_ood_score", "Δ gold score OOD", 1, 3, True),
    ("d_heldout", "Δ held-out gold (pts)", 100, 1, True),
    ("peak_gap", "peak hacking gap", 1, 3, False),
    ("d_saturation", "Δ saturation", 1, 3, True),
    ("final_div_detect", "final diversity (detections)", 1, 3, False),
]


def arm_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    lines = ["| arm | seeds | " + " | ".join(h for _, h, *_ in COLS) + " |", "|---" * (len(COLS) + 2) + "|"]
    for arm in order:
        if arm not in arms:
            continue
        stats = [run_stats(r) for _, r in sorted(arms[arm].items())]
        cells = [fmt([s[k] for s in stats], sc, d, sg) for k, _, sc, d, sg in COLS]
        lines.append(f"| {arm} | {len(stats)} | " + " | ".join(cells) + " |")
    return lines


def paired_table(arms: dict[str, dict[int, list[dict]]], order: list[str], ref: str = "grpo") -> list[str]:
    keys = [("proxy_gain", "proxy rise", 1, 3), ("early_reward", f"train reward it. 1–{EARLY}", 1, 3),
            ("late_reward", f"train reward, last {EARLY}", 1, 3),
            ("final_ood", "final gold OOD (pts)", 100, 1), ("d_ood_score", "Δ gold score OOD", 1, 3),
            ("d_heldout", "Δ held-out gold (pts)", 100, 1), ("peak_gap", "peak hacking gap", 1, 3),
            ("d_saturation", "Δ saturation", 1, 3)]
    lines = [f"| arm − {ref} | pairs | " + " | ".join(h for _, h, *_ in keys) + " |", "|---" * (len(keys) + 2) + "|"]
    if ref not in arms:
        return lines
    for arm in order:
        if arm == ref or arm not in arms:
            continue
        seeds = sorted(set(arms[arm]) & set(arms[ref]))
        a = {s: run_stats(arms[arm][s]) for s in seeds}
        b = {s: run_stats(arms[ref][s]) for s in seeds}
        cells = [fmt([a[s][k] - b[s][k] for s in seeds], sc, d, True) for k, _, sc, d in keys]
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def hack_table(arms: dict[str, dict[int, list[dict]]], arm: str = "grpo", patience: int = 3) -> list[str]:
    lines = ["| seed | proxy it. 0 → final | gold OOD it. 0 / best / final % | held-out gold it. 0 → final % "
             "| hacked? | monitor's early stop at |", "|---|---|---|---|---|---|"]
    n_hacked = 0
    for seed, rows in sorted(arms.get(arm, {}).items()):
        p = series(rows, "monitor/proxy_id")
        g = series(rows, "monitor/gold_acc_ood")
        h = series(rows, "eval/gold_accuracy")
        best = max(v for _, v in g)
        hacked = is_hacked(rows)
        n_hacked += hacked
        lines.append(f"| {seed} | {p[0][1]:.3f} → {p[-1][1]:.3f} | {100 * g[0][1]:.1f} / {100 * best:.1f} / "
                     f"{100 * g[-1][1]:.1f} | {100 * h[0][1]:.1f} → {100 * h[-1][1]:.1f} | {'yes' if hacked else 'no'} "
                     f"| {iteration_text(stop_iteration(rows, patience))} |")
    lines.append("")
    lines.append(f"{arm}: {n_hacked} of {len(arms.get(arm, {}))} seeds hacked (proxy up, out-of-domain gold "
                 "finishing at least 5 points below its best).")
    return lines


def tag_table(arms: dict[str, dict[int, list[dict]]], order: list[str]) -> list[str]:
    runs = [run_stats(r) for arm in order for r in arms.get(arm, {}).values()]
    tags = [t for t in TAGS if any(math.isfinite(s[f"tag_{t}"]) for s in runs)]  # the split may lack a tag
    lines = ["| arm | " + " | ".join(tags) + " | Δ exact count (pts) |", "|---" * (len(tags) + 2) + "|"]
    base_done = False
    for arm in order:
        if arm not in arms:
            continue
        stats = [run_stats(r) for _, r in sorted(arms[arm].items())]
        if not base_done:
            lines.append("| base model (iteration 0) | " + " | ".join(
                fmt([s[f"base_tag_{t}"] for s in stats], 100, 1) for t in tags) + " | – |")
            base_done = True
        lines.append(f"| {arm} | " + " | ".join(fmt([s[f"tag_{t}"] for s in stats], 100, 1) for t in tags)
                     + f" | {fmt([s['d_exact_count'] for s in stats], 100, 1, True)} |")
    return lines


def scale_table(root: Path) -> list[str]:
    """SLAS vs DanceGRPO per model size: each size's arms, and their paired differences."""
    per_seed = []
    lines = ["| model | parameters | pairs | base gold OOD % | grpo final OOD % | slas final OOD % "
             "| slas − grpo: OOD gold (pts) | held-out gold (pts) | peak hacking gap | Δ saturation | grpo seeds hacked |",
             "|---" * 11 + "|"]
    for size, part in SCALE_PARTS.items():
        arms = load_runs(root, [part])
        if "grpo" not in arms or "slas" not in arms:
            continue
        seeds = sorted(set(arms["grpo"]) & set(arms["slas"]))
        a = {s: run_stats(arms["slas"][s]) for s in seeds}
        b = {s: run_stats(arms["grpo"][s]) for s in seeds}
        n = model_params(root, part)
        hacked = f"{sum(is_hacked(arms['grpo'][s]) for s in seeds)} of {len(seeds)}"
        diff = [fmt([a[s][k] - b[s][k] for s in seeds], sc, d, True)
                for k, sc, d in [("final_ood", 100, 1), ("d_heldout", 100, 1), ("peak_gap", 1, 3),
                                 ("d_saturation", 1, 3)]]
        lines.append(f"| {size} | {f'{n:,}' if n else '?'} | {len(seeds)} | {fmt([b[s]['base_ood'] for s in seeds], 100, 1)} "
                     f"| {fmt([b[s]['final_ood'] for s in seeds], 100, 1)} | {fmt([a[s]['final_ood'] for s in seeds], 100, 1)} "
                     f"| " + " | ".join(diff) + f" | {hacked} |")
        d = [100 * (a[s]["final_ood"] - b[s]["final_ood"]) for s in seeds]
        ci = t_interval(d)
        per_seed.append(f"- {size}: slas − grpo final OOD gold per seed {', '.join(f'{v:+.1f}' for v in d)} pts; "
                        f"95% t interval [{ci['mean'] - ci['half']:+.2f}, {ci['mean'] + ci['half']:+.2f}]")
    return lines + [""] + per_seed


def probe_table(arms: dict[str, dict[int, list[dict]]], patience: int = 3) -> list[str]:
    """One row per probed arm (its first seed): does DanceGRPO hack at this strength under this objective?"""
    lines = ["| arm | proxy it. 0 → final | peak hacking gap | Δ saturation | gold OOD it. 0 / best / final % "
             "| held-out gold it. 0 → final % | hacked? | monitor's early stop at |", "|---" * 8 + "|"]
    for arm in sorted(arms):
        rows = arms[arm][min(arms[arm])]
        s = run_stats(rows)
        p, g, h = (series(rows, k) for k in ("monitor/proxy_id", "monitor/gold_acc_ood", "eval/gold_accuracy"))
        lines.append(f"| {arm} | {p[0][1]:.3f} → {p[-1][1]:.3f} | {s['peak_gap']:.3f} | {s['d_saturation']:+.3f} "
                     f"| {100 * g[0][1]:.1f} / {100 * max(v for _, v in g):.1f} / {100 * g[-1][1]:.1f} "
                     f"| {100 * h[0][1]:.1f} → {100 * h[-1][1]:.1f} | {'yes' if is_hacked(rows) else 'no'} "
                     f"| {iteration_text(stop_iteration(rows, patience))} |")
    return lines


def hack_scale_table(sizes: dict[str, dict]) -> list[str]:
    """Part 2 under the proxy per model size: each arm's peak hacking gap and the paired differences."""
    lines = ["| model | parameters | pairs | grpo peak hacking gap | slas peak hacking gap "
             "| slas − grpo: peak hacking gap | Δ saturation | Δ held-out gold (pts) | seeds hacked (grpo, slas) |",
             "|---" * 9 + "|"]
    for size, x in sizes.items():
        def diff(k: str, sc: float, d: int, x: dict = x) -> str:
            return fmt([a[k] - b[k] for a, b in zip(x["slas"], x["grpo"], strict=True)], sc, d, True)

        n = x["params"]
        hacked = ", ".join(f"{sum(map(is_hacked, x['rows'][arm]))} of {len(x['seeds'])}" for arm in ("grpo", "slas"))
        lines.append(f"| {size} | {f'{n:,}' if n else '?'} | {len(x['seeds'])} "
                     f"| {fmt([b['peak_gap'] for b in x['grpo']])} | {fmt([a['peak_gap'] for a in x['slas']])} "
                     f"| {diff('peak_gap', 1, 3)} | {diff('d_saturation', 1, 3)} | {diff('d_heldout', 100, 1)} "
                     f"| {hacked} |")
    return lines
