"""The study's figures: each arm's mean over seeds with its 95% t band per metric (``plot``), part 1's and part 2's
sets of them, and copies of ``slas compare``'s side-by-side sample grids."""

from __future__ import annotations

import math
from pathlib import Path

from slas.evals.stats import t_interval
from slas.recipe.metrics import series

from .part1 import MAIN_ORDER, ablation_order
from .runs import ESTIMATORS, GAMMA_AXIS, MATCHED, PART2_AWM, PART2_SCALE, SCALE_PROBES, detail_arms, grids

HACK_PANELS = [("monitor/proxy_id", "proxy (toy_biased), in-domain"), ("monitor/gold_score_ood", "gold score, out-of-domain"),
               ("monitor/saturation", "saturation (the bias)")]
GOLD_PANELS = [("eval/gold_accuracy", "held-out strict accuracy (240 images)"),
               ("eval/id/gold_accuracy", "in-domain strict accuracy (144 images)")]


def plot(arms: dict[str, dict[int, list[dict]]], order: list[str], path: Path,
         panels: list[tuple[str, str]] = HACK_PANELS) -> None:
    """One panel per (metric key, title): each arm's mean over seeds at every evaluation, with its 95% t band
    (arms with fewer than 3 seeds: dashed, no band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for arm in order:
            if arm not in arms:
                continue
            per_seed = [dict(series(r, key)) for r in arms[arm].values()]
            its = sorted(set.intersection(*[set(s) for s in per_seed]))
            cis = [t_interval([s[i] for s in per_seed]) for i in its]
            mean = [c["mean"] for c in cis]
            half = [0.0 if math.isnan(c["half"]) else c["half"] for c in cis]
            if len(per_seed) < 3:  # a probe: t_{0.975,1} = 12.7 would swamp the axes, so a dashed mean, no band
                ax.plot(its, mean, "--", label=f"{arm} ({len(per_seed)} seeds, no band)")
                continue
            ax.plot(its, mean, label=arm)
            ax.fill_between(its, [m - h for m, h in zip(mean, half, strict=True)],
                            [m + h for m, h in zip(mean, half, strict=True)], alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_grid(src: Path, dst: Path) -> None:
    """A copy of one of `slas compare`'s side-by-side sample grids, in a 64-colour palette (ShapesWorld images are a
    handful of flat colours, so the copy stays small)."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").quantize(64).save(dst, optimize=True)


def part2_plots(root: Path, runs: dict[str, dict[str, dict[int, list[dict]]]], out: Path) -> None:
    """study2_gold.png (the gold arms' held-out and in-domain curves), study2_hack.png and study2_pref.png (the
    toy_biased and toy_pref arms' proxy, out-of-domain gold and saturation), study2_estimators.png and
    study2_gamma.png (the other estimators and the gamma axis, gold reward; ``_hack`` under toy_biased) and
    study2_details.png (SLAS's open details against its defaults, gold reward) and study2_awm.png (the main arms
    under awm) once those runs exist, and the last evaluation's sample grids of the gold, awm, toy_biased and
    toy_pref comparisons and of ``L`` on the gold reward, whose curves (with the training reward and debris) are
    study2_scale_L.png (``runs``: ``part2_runs``)."""
    gold, awm, hack, pref = runs["gold"], runs["awm"], runs["part2_hack"], runs["part2_pref"]
    if gold:
        plot(gold, ["grpo", "slas", MATCHED], out / "study2_gold.png", GOLD_PANELS)
    if awm:
        plot(awm, ["grpo", "slas"], out / "study2_awm.png", GOLD_PANELS)
    if hack:
        plot(hack, ["grpo", "slas", MATCHED], out / "study2_hack.png", HACK_PANELS)
    for arms, suffix, panels in ((gold, "", GOLD_PANELS), (hack, "_hack", HACK_PANELS)):
        for name, order in (("estimators", ESTIMATORS), ("gamma", GAMMA_AXIS)):
            if len([a for a in order if a in arms]) > 2:  # more than the main comparison's two arms
                plot(arms, order, out / f"study2_{name}{suffix}.png", panels)
    details = detail_arms(gold)
    if details:
        plot(gold, ["slas", *details], out / "study2_details.png", GOLD_PANELS)
    if pref:
        plot(pref, ["grpo", "slas", MATCHED], out / "study2_pref.png",
             [("monitor/proxy_id", "proxy (toy_pref), in-domain"), *HACK_PANELS[1:]])
    large = runs["scale"][PART2_SCALE["L"]]
    if {"grpo", "slas"} <= set(large):  # does training hold its gains on L (and its step-size arms, if run)?
        plot(large, ["grpo", "slas", *SCALE_PROBES], out / "study2_scale_L.png",
             [*GOLD_PANELS, ("train/reward_mean", "training reward (the gold)"), ("eval/debris", "debris, held-out")])
    for part, stem in (("part2_main", "study2_grid"), (PART2_AWM, "study2_awm_grid"),
                       ("part2_hack", "study2_hack_grid"), ("part2_pref", "study2_pref_grid"),
                       (PART2_SCALE["L"], "study2_scale_L_grid")):
        last = grids(root, part)[-1:]
        if last:
            it = int(last[0].stem.removeprefix("iter_"))
            save_grid(last[0], out / f"{stem}_iter_{it}.png")


def part1_plots(root: Path, arms: dict[str, dict[int, list[dict]]], out: Path) -> None:
    """study_curves.png (the main arms), study_gamma.png (the gamma axis) and the main comparison's sample grids at
    its first and last evaluation."""
    plot(arms, MAIN_ORDER, out / "study_curves.png")
    plot(arms, ablation_order(arms)[:4], out / "study_gamma.png")
    main = grids(root, "main")
    for g in main[:1] + main[-1:]:  # slas compare's side-by-side grids, first and last evaluation
        save_grid(g, out / f"study_grid_{g.stem}.png")
