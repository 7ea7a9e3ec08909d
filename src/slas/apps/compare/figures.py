"""``slas compare``'s figures: ``plots/*.png`` (each curve of ``CURVES``: the mean over seeds per method with a 95%
t band) and ``grids/iter_*.png`` (each method's sample grid side by side at a few iterations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slas.apps.compare.planning import RunSpec, labels
from slas.evals.stats import t_interval
from slas.recipe.metrics import read_metrics, series
from slas.recipe.run_dir import RunDir

# the keys read from the runs' metrics (slas.toyworld.monitor and the recipe's ShapesWorld evaluation)
GOLD_ID, GOLD_OOD, PROXY, GAP = "monitor/gold_acc_id", "monitor/gold_acc_ood", "monitor/proxy_id", "monitor/hacking_gap"
DIV, DIV_DET, HELDOUT = "monitor/div_pixel", "monitor/div_detect", "eval/gold_accuracy"
CURVES = [  # file, title, [(key, panel title)]
    ("proxy.png", "proxy (training reward), in-domain", [(PROXY, "proxy, in-domain")]),
    ("gold.png", "gold (strict verifier accuracy)", [(GOLD_ID, "gold, in-domain"), (GOLD_OOD, "gold, out-of-domain")]),
    ("hacking_gap.png", "hacking gap", [(GAP, "hacking gap (gold-score units)")]),
    ("diversity.png", "diversity within a group", [(DIV, "pixel RMS distance"), (DIV_DET, "detection Jaccard distance")]),
]


def plot_curves(out: Path, specs: list[RunSpec]) -> list[Path]:
    """One PNG per entry of CURVES: mean over seeds per method, with a 95% t band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    rows = {s.name: read_metrics(Path(s.cfg.run.out_dir)) for s in specs}
    written = []
    for fname, title, panels in CURVES:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
        for ax, (key, ptitle) in zip(axes[0], panels, strict=True):
            for k, lb in enumerate(labels(specs)):
                per_it: dict[int, list[float]] = {}
                for s in specs:
                    if s.label == lb:
                        for i, v in series(rows[s.name], key):
                            per_it.setdefault(i, []).append(v)
                if not per_it:
                    continue
                its = sorted(per_it)
                cis = [t_interval(per_it[i]) for i in its]
                mean = np.array([c["mean"] for c in cis])
                half = np.nan_to_num(np.array([c["half"] for c in cis]))
                colour = f"C{k % 10}"
                ax.plot(its, mean, marker="o", ms=3, color=colour, label=lb)
                ax.fill_between(its, mean - half, mean + half, color=colour, alpha=0.2, lw=0)
            ax.set_title(ptitle)
            ax.set_xlabel("iteration")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{title} (mean over seeds, 95% t band)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=90)
        plt.close(fig)
        written.append(out / fname)
    return written


def sample_grids(out: Path, specs: list[RunSpec], max_iterations: int = 5) -> list[Path]:
    """``grids/iter_*.png``: each method's evaluation grid (its first seed's run) side by side, at up to
    ``max_iterations`` iterations that every method has (first and last included)."""
    from PIL import Image, ImageDraw

    first = {}
    for s in specs:
        first.setdefault(s.label, s)
    have = {}
    for lb, s in first.items():
        have[lb] = RunDir(s.cfg.run.out_dir).grids()
    common = sorted(set.intersection(*[set(v) for v in have.values()])) if have else []
    if not common:
        return []
    n = min(max_iterations, len(common))
    pick = sorted({common[round(k * (len(common) - 1) / max(1, n - 1))] for k in range(n)})
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for it in pick:
        tiles = [(lb, Image.open(have[lb][it]).convert("RGB")) for lb in first]
        head, pad = 16, 6
        w = sum(t.width for _, t in tiles) + pad * (len(tiles) + 1)
        h = max(t.height for _, t in tiles) + head + pad
        canvas = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(canvas)
        x = pad
        for lb, t in tiles:
            draw.text((x, 2), f"{lb} (seed {first[lb].seed}) it {it}", fill="black")
            canvas.paste(t, (x, head))
            x += t.width + pad
        path = out / f"iter_{it:06d}.png"
        canvas.save(path)
        written.append(path)
    return written
