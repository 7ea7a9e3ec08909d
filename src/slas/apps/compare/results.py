"""``slas compare``'s results: one ``results.csv`` row per run (final and best metrics, iterations to a target) and
``summary.md`` (mean +- 95% t-interval over seeds per method, and how each estimator was configured)."""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import numpy as np

from slas.algo import advantages
from slas.apps.compare.figures import CURVES, DIV, DIV_DET, GAP, GOLD_ID, GOLD_OOD, HELDOUT, PROXY
from slas.apps.compare.planning import GRIDS, PLOTS, RunSpec, labels, status
from slas.evals.stats import t_interval
from slas.recipe.metrics import best_value, first_value, last_value, read_metrics, series
from slas.recipe.run_dir import RunDir

GOLD_TARGET_RISE = 0.05  # default target: the run's own iteration-0 in-domain gold accuracy + 5 points
COLUMNS = ["run", "label", "method", "seed", "sweep", "status", "iterations", "minutes",
           "base_gold_id", "final_gold_id", "best_gold_id", "final_gold_ood", "best_gold_ood",
           "base_gold_heldout", "final_gold_heldout", "best_gold_heldout", "final_exact_count", "final_geneval_heldout",
           "final_gold_score_id", "iters_to_target", "gold_target", "base_proxy_id", "final_proxy_id",
           "peak_hacking_gap", "final_hacking_gap", "final_div_pixel", "final_div_detect", "final_saturation"]


def run_result(spec: RunSpec, gold_target: float | None, code: int | None) -> dict:
    """One results.csv row (NaN where the run has no such metric)."""
    run = RunDir(spec.cfg.run.out_dir)
    rows = read_metrics(run.root)
    st = status(spec)
    res: dict = {"run": spec.name, "label": spec.label, "method": spec.method, "seed": spec.seed,
                 "sweep": ";".join(f"{k}={v}" for k, v in spec.sweep.items()),
                 "status": ("early_stopped" if run.early_stop.is_file() else "finished") if st == "done"
                 else "failed" if code not in (None, 0) else "incomplete",
                 "iterations": rows[-1]["iteration"] if rows else 0,
                 "minutes": sum(v for r in rows for k, v in r.items() if k in (
                     "time/rollout_s", "time/reward_s", "time/train_s", "time/eval_s")) / 60}
    first, last, best = (functools.partial(f, rows) for f in (first_value, last_value, best_value))
    res |= {"base_gold_id": first(GOLD_ID), "final_gold_id": last(GOLD_ID), "best_gold_id": best(GOLD_ID),
            "final_gold_ood": last(GOLD_OOD), "best_gold_ood": best(GOLD_OOD),
            "base_gold_heldout": first(HELDOUT), "final_gold_heldout": last(HELDOUT), "best_gold_heldout": best(HELDOUT),
            "final_exact_count": last("eval/exact_count"), "final_geneval_heldout": last("eval/geneval_accuracy"),
            "final_gold_score_id": last("monitor/gold_score_id"), "base_proxy_id": first(PROXY),
            "final_proxy_id": last(PROXY), "peak_hacking_gap": best(GAP), "final_hacking_gap": last(GAP),
            "final_div_pixel": last(DIV), "final_div_detect": last(DIV_DET), "final_saturation": last("monitor/saturation")}
    target = gold_target if gold_target is not None else res["base_gold_id"] + GOLD_TARGET_RISE
    res["gold_target"] = target
    res["iters_to_target"] = next((float(i) for i, v in series(rows, GOLD_ID) if v >= target - 1e-12), math.nan)
    return res


def write_results(path: Path, results: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in results:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float)
                            else v) for k, v in r.items()})


def _fmt_ci(values: list[float], pct: bool = False, digits: int = 3) -> str:
    ci = t_interval(values)
    if ci["n"] == 0:
        return "–"
    k = 100.0 if pct else 1.0
    d = 1 if pct else digits
    mean = f"{k * ci['mean']:.{d}f}"
    return mean if math.isnan(ci["half"]) else f"{mean} ± {k * ci['half']:.{d}f}"


def estimator_statement(specs: list[RunSpec]) -> list[str]:
    """How each method was configured (markdown lines)."""
    lines = ["| method | estimator | adv_clip | options set | options at their defaults |", "|---|---|---|---|---|"]
    for label in labels(specs):
        s = next(x for x in specs if x.label == label)
        a = s.cfg.advantage
        defaults = advantages.options(a.estimator)
        given = ", ".join(f"{k}={v}" for k, v in a.params.items()) or "none"
        rest = ", ".join(f"{k}={v}" for k, v in defaults.items() if k not in a.params) or "none"
        lines.append(f"| {label} | `{a.estimator}` | {a.adv_clip} | {given} | {rest} |")
    c = specs[0].cfg
    lines += ["", f"Common recipe (identical for every run): reward `{c.reward.weights}`, sampler `{c.sample.family}` "
              f"(T={c.sample.steps}, eta={c.sample.eta}), P={c.train.prompts_per_iter} prompts x G={c.train.group_size}, "
              f"{c.train.iterations} iterations, lr {c.train.lr}, clip range {c.train.clip_range}, "
              f"evaluation every {c.eval.every} iterations (monitor: {c.monitor.prompts} in-domain prompts x "
              f"{c.monitor.group} seeds, `{c.eval.split}` split for out-of-domain)."]
    return lines


def write_summary(path: Path, specs: list[RunSpec], results: list[dict], command: str) -> None:
    by = {lb: [r for r in results if r["label"] == lb] for lb in labels(specs)}
    seeds = sorted({s.seed for s in specs})
    lines = ["# slas compare", "", f"`{command}`", "",
             f"Seeds {seeds}; every cell is the mean ± the 95% Student-t half-width over seeds (one number per run; "
             "no ± with one run). Gold = the strict verifier's accuracy (percent): in-domain on the monitor's fixed "
             "`train`-split prompts x seeds, out-of-domain on the `ood` images of the held-out evaluation. "
             "Iterations to target: the first evaluation whose in-domain gold reaches the target "
             "(mean over the runs that reached it). The proxy is the training reward; the hacking gap is in "
             "gold-score units (docs/hacking.md).", "",
             "| method | runs | best gold ID | final gold ID | best gold OOD | final gold OOD | iterations to target "
             "| final proxy | peak hacking gap | final diversity (pixel) | final diversity (detections) |",
             "|---" * 11 + "|"]
    for lb, rs in by.items():
        reached = [r["iters_to_target"] for r in rs if not math.isnan(r["iters_to_target"])]
        pct = [_fmt_ci([r[k] for r in rs], True) for k in ("best_gold_id", "final_gold_id", "best_gold_ood",
                                                              "final_gold_ood")]
        num = [_fmt_ci([r[k] for r in rs]) for k in ("final_proxy_id", "peak_hacking_gap", "final_div_pixel",
                                                      "final_div_detect")]
        lines.append(f"| {lb} | {len(rs)} | {' | '.join(pct)} | {_fmt_ci(reached, digits=0)} "
                     f"({len(reached)}/{len(rs)} reached) | {' | '.join(num)} |")
    lines += ["", f"Held-out `{specs[0].cfg.eval.split}` split (the recipe's evaluation, tag-balanced), percent:", "",
              "| method | base | final | best | final exact count | final GenEval rules | minutes/run |", "|---" * 7 + "|"]
    for lb, rs in by.items():
        pct = [_fmt_ci([r[k] for r in rs], True) for k in ("base_gold_heldout", "final_gold_heldout",
                                                              "best_gold_heldout", "final_exact_count",
                                                              "final_geneval_heldout")]
        lines.append(f"| {lb} | {' | '.join(pct)} | {np.mean([r['minutes'] for r in rs]):.1f} |")
    curves = {lb: [series(read_metrics(Path(s.cfg.run.out_dir)), HELDOUT) for s in specs if s.label == lb] for lb in by}
    its = sorted(set.intersection(*[{i for i, _ in c} for cs in curves.values() for c in cs])) if curves else []
    if its:
        lines += ["", "Held-out strict gold at each evaluation (mean over seeds, percent):", "",
                  "| method | " + " | ".join(f"it {i}" for i in its) + " |", "|---" * (len(its) + 1) + "|"]
        for lb, cs in curves.items():
            lines.append(f"| {lb} | " + " | ".join(f"{100 * np.mean([dict(c)[i] for c in cs]):.1f}" for i in its) + " |")
    lines += ["", "## How each estimator was configured", "", *estimator_statement(specs)]
    lines += ["", "## Runs", "", "| run | status | iterations | minutes |", "|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['status']} | {r['iterations']} | {r['minutes']:.1f} |" for r in results]
    lines += ["", "Plots: " + ", ".join(f"[{f}]({PLOTS}/{f})" for f, _, _ in CURVES) + f". Sample grids: `{GRIDS}/`.", ""]
    path.write_text("\n".join(lines))
