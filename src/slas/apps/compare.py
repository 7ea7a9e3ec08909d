"""``slas compare``: advantage estimators x seeds (x sweep values) of one recipe, with confidence intervals.

    slas compare --config configs/toy_slas.yaml --methods slas,grpo,drgrpo,grpo_global_std --seeds 5 \\
        --out runs/cmp [--sweep advantage.params.gamma=0.25,0.5,1,2] [--jobs N] [overrides ...]

Every run is one ``slas train`` process (``python -m slas.apps.cli train``), so runs are isolated and can go in
parallel: up to ``--jobs`` at once, each with ``--threads`` torch threads (default 2; ``--jobs`` defaults to the
usable cores // threads, at least 1). A run differs from the base config (plus overrides) only in
``advantage.estimator`` (the method), ``run.seed``, ``run.out_dir`` and the swept keys. The base config's
``advantage.params`` belong to its own estimator: the other methods get their documented defaults (``{}``). A
sweep key applies to the methods whose config accepts it (``advantage.params.gamma`` to ``slas`` only); the others
run once per seed.

Resumable: a run whose ``metrics.jsonl`` reached ``train.iterations`` (or that stopped early,
``early_stop.json``) is skipped, one with a checkpoint is continued with ``slas train --resume``, and the rest
start. A run directory made with another config is an error, never silently reused.

Outputs in ``--out`` (docs/hacking.md): ``runs/<run>/`` (the run directories), ``configs/<run>.yaml``,
``logs/<run>.log``, ``results.csv`` (one row per run: final and best metrics), ``summary.md`` (mean +- 95%
t-interval over seeds per method, how each estimator was configured), ``plots/*.png`` (curves with CI bands) and
``grids/iter_*.png`` (each method's sample grid side by side at fixed iterations).
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from slas.algo import advantages
from slas.config import Config, ConfigError, _set_dotted, from_dict, load_config
from slas.evals.stats import t_interval
from slas.recipe.metrics import last_iteration, read_metrics
from slas.recipe.run_dir import RunDir

DEFAULT_THREADS = 2  # torch threads per training process: the ShapesWorld model scales to about 2 on CPU
GOLD_TARGET_RISE = 0.05  # default target: the run's own iteration-0 in-domain gold accuracy + 5 points


@dataclass
class RunSpec:
    name: str  # directory name under OUT/runs
    label: str  # what the run is aggregated under: the method, plus its sweep values
    method: str
    seed: int
    sweep: dict = field(default_factory=dict)  # swept key -> value (the keys that apply to this method)
    cfg: Config | None = None


# ----------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------


def parse_sweep(spec: str) -> tuple[str, list]:
    """``"advantage.params.gamma=0.25,0.5,1"`` -> (key, [0.25, 0.5, 1]); values parsed as YAML."""
    key, sep, raw = spec.partition("=")
    values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    if not sep or not key.strip() or not values:
        raise ConfigError(f"--sweep {spec!r} must look like section.key=v1,v2,..., e.g. advantage.params.gamma=0.5,1,2")
    return key.strip(), values


def parse_seeds(spec: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"0,3,7"`` -> those seeds."""
    try:
        seeds = [int(s) for s in spec.split(",")] if "," in spec else list(range(int(spec)))
    except ValueError:
        raise ConfigError(f"--seeds {spec!r} must be a count (5 = seeds 0..4) or a comma list (0,3,7)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {spec!r}: give at least one seed, each >= 0 and distinct")
    return seeds


def _slug(x: object) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "", str(x))


def _build(base: dict, method: str, sweep: dict, seed: int, run_dir: Path) -> Config:
    d = json.loads(json.dumps(base))  # deep copy
    if method != d["advantage"]["estimator"]:
        d["advantage"]["params"] = {}  # the base's params are options of the base's estimator
    d["advantage"]["estimator"] = method
    for k, v in sweep.items():
        _set_dotted(d, k, v)
    d["run"]["seed"], d["run"]["out_dir"] = seed, str(run_dir)
    return from_dict(d)


def plan(config: str | None, methods: list[str], seeds: list[int], out: Path, sweeps: list[tuple[str, list]],
         overrides: list[str]) -> list[RunSpec]:
    """Every run of the comparison, validated (a bad method, key or value fails here, before any training)."""
    base = load_config(config, overrides).to_dict()
    for m in methods:
        if m not in advantages.available():
            raise ConfigError(f"--methods: unknown estimator {m!r}; registered: {', '.join(advantages.available())}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods {methods} names a method twice")
    # which sweep keys apply to which method: accepted for every value, or for none (then the method is not swept)
    applies: dict[tuple[str, str], bool] = {}
    for key, values in sweeps:
        for m in methods:
            errors = []
            for v in values:
                try:
                    _build(base, m, {key: v}, 0, out / "runs" / "_")
                except ConfigError as e:
                    errors.append(str(e))
            if errors and len(errors) < len(values):
                raise ConfigError(f"--sweep {key}: some values are invalid for method {m!r}: {errors[0]}")
            applies[key, m] = not errors
        if not any(applies[key, m] for m in methods):
            raise ConfigError(f"--sweep {key} applies to none of the methods {methods}: {errors[0]}")
    specs = []
    for m in methods:
        keys = [(k, vs) for k, vs in sweeps if applies[k, m]]
        for combo in itertools.product(*[vs for _, vs in keys]):
            sweep = {k: v for (k, _), v in zip(keys, combo, strict=True)}
            tag = "".join(f"-{k.rsplit('.', 1)[-1]}{_slug(v)}" for k, v in sweep.items())
            label = m + "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in sweep.items())
            for s in seeds:
                name = f"{m}{tag}_s{s}"
                specs.append(RunSpec(name, label, m, s, sweep, _build(base, m, sweep, s, out / "runs" / name)))
    # seed-major order (stable: methods keep their order within a seed), so that an interrupted comparison
    # has every method at the same seeds rather than some methods finished and others not started
    specs.sort(key=lambda spec: seeds.index(spec.seed))
    return specs


def status(spec: RunSpec) -> str:
    """``done`` (all iterations, or stopped early), ``resume`` (has a checkpoint) or ``new``."""
    run = RunDir(spec.cfg.run.out_dir)
    if run.is_run():
        had = load_config(run.config).to_dict()
        want = spec.cfg.to_dict()
        if had != want:
            diff = sorted(f"{s}.{k}" for s in want for k in want[s] if had.get(s, {}).get(k) != want[s][k])
            raise ConfigError(f"{run.root} holds a run of another config (differs in {diff[:4]}); use a new --out or "
                              "remove that run directory")
    if run.early_stop.is_file():
        return "done"
    rows = read_metrics(run.root)
    if rows and rows[-1]["iteration"] >= spec.cfg.train.iterations:
        return "done"
    return "resume" if run.latest() is not None else "new"


# ----------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------


LOG_REFRESH_S = 60.0  # the progress bar's refresh when stderr is a file, not a terminal (1 s there)


def default_jobs(threads: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads))


def progress_text(running: list[RunSpec]) -> str:
    """Each running run's latest logged iteration: ``slas_s0 12/120, grpo_s0 -/120`` (``-``: no row yet)."""
    parts = []
    for spec in running:
        it = last_iteration(spec.cfg.run.out_dir)
        parts.append(f"{spec.name} {'-' if it is None else it}/{spec.cfg.train.iterations}")
    return ", ".join(parts)


def execute(specs: list[RunSpec], out: Path, jobs: int, threads: int, log=print, progress: bool = True) -> dict[str, int]:
    """Run the unfinished runs, ``jobs`` processes at a time; returns run name -> exit status of those launched.
    ``progress``: one bar over the runs (stderr), its text each running run's latest iteration."""
    from tqdm import tqdm

    todo = [(s, status(s)) for s in specs]
    todo = [(s, st) for s, st in todo if st != "done"]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    codes: dict[str, int] = {}
    queue = list(todo)

    def _terminated(signum, frame):  # `kill` (SIGTERM) stops the children too, as Ctrl-C does
        raise SystemExit(128 + signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    bar = tqdm(total=len(todo), desc="compare", unit="run", file=sys.stderr, dynamic_ncols=True,
               disable=not progress or not todo)
    by_name = {spec.name: spec for spec, _ in todo}
    shown = 0.0
    every = 1.0 if sys.stderr.isatty() else LOG_REFRESH_S
    try:
        while queue or running:
            while queue and len(running) < jobs:
                spec, st = queue.pop(0)
                cfg_path = out / "configs" / f"{spec.name}.yaml"
                cfg_path.write_text(yaml.safe_dump(spec.cfg.to_dict(), sort_keys=False))
                cmd = [sys.executable, "-m", "slas.apps.cli", "train", "--no-progress"]
                cmd += ["--resume", spec.cfg.run.out_dir] if st == "resume" else ["--config", str(cfg_path)]
                logf = (out / "logs" / f"{spec.name}.log").open("a")
                running[spec.name] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env),
                                      time.time(), logf)
                log(f"{'resumed' if st == 'resume' else 'started'} {spec.name} "
                    f"({len(codes) + len(running)}/{len(todo)})")
            time.sleep(0.2)
            for name, (proc, t0, logf) in list(running.items()):
                if proc.poll() is None:
                    continue
                logf.close()
                codes[name] = proc.returncode
                del running[name]
                msg = "finished" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see logs/{name}.log)"
                log(f"{msg} {name} in {(time.time() - t0) / 60:.1f} min")
                bar.update(1)
            if running and time.time() - shown >= every:  # each running run's latest iteration
                bar.set_postfix_str(progress_text([by_name[n] for n in running]), refresh=True)
                shown = time.time()
    finally:  # interrupted: stop the processes this call started (each resumes next time)
        bar.close()
        for proc, _, logf in running.values():
            proc.terminate()
            proc.wait()
            logf.close()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return codes


# ----------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------

# the keys read from metrics.jsonl (slas.toyworld.monitor and the recipe's ShapesWorld evaluation)
GOLD_ID, GOLD_OOD, PROXY, GAP = "monitor/gold_acc_id", "monitor/gold_acc_ood", "monitor/proxy_id", "monitor/hacking_gap"
DIV, DIV_DET, HELDOUT = "monitor/div_pixel", "monitor/div_detect", "eval/gold_accuracy"
CURVES = [  # file, title, [(key, panel title)]
    ("proxy.png", "proxy (training reward), in-domain", [(PROXY, "proxy, in-domain")]),
    ("gold.png", "gold (strict verifier accuracy)", [(GOLD_ID, "gold, in-domain"), (GOLD_OOD, "gold, out-of-domain")]),
    ("hacking_gap.png", "hacking gap", [(GAP, "hacking gap (gold-score units)")]),
    ("diversity.png", "diversity within a group", [(DIV, "pixel RMS distance"), (DIV_DET, "detection Jaccard distance")]),
]
COLUMNS = ["run", "label", "method", "seed", "sweep", "status", "iterations", "minutes",
           "base_gold_id", "final_gold_id", "best_gold_id", "final_gold_ood", "best_gold_ood",
           "base_gold_heldout", "final_gold_heldout", "best_gold_heldout", "final_exact_count", "final_geneval_heldout",
           "final_gold_score_id", "iters_to_target", "gold_target", "base_proxy_id", "final_proxy_id",
           "peak_hacking_gap", "final_hacking_gap", "final_div_pixel", "final_div_detect", "final_saturation"]


def series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """(iteration, value) of every row that logged a finite ``key``."""
    return [(r["iteration"], float(r[key])) for r in rows if key in r and math.isfinite(r[key])]


def first_value(rows: list[dict], key: str) -> float:
    s = series(rows, key)
    return s[0][1] if s else math.nan


def last_value(rows: list[dict], key: str) -> float:
    s = series(rows, key)
    return s[-1][1] if s else math.nan


def best_value(rows: list[dict], key: str) -> float:
    s = series(rows, key)
    return max(v for _, v in s) if s else math.nan


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


def _fmt_ci(values: list[float], pct: bool = False, digits: int = 3) -> str:
    ci = t_interval(values)
    if ci["n"] == 0:
        return "–"
    k = 100.0 if pct else 1.0
    d = 1 if pct else digits
    mean = f"{k * ci['mean']:.{d}f}"
    return mean if math.isnan(ci["half"]) else f"{mean} ± {k * ci['half']:.{d}f}"


def _labels(specs: list[RunSpec]) -> list[str]:
    return list(dict.fromkeys(s.label for s in specs))


def estimator_statement(specs: list[RunSpec]) -> list[str]:
    """How each method was configured (markdown lines)."""
    lines = ["| method | estimator | adv_clip | options set | options at their defaults |", "|---|---|---|---|---|"]
    for label in _labels(specs):
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
    labels = _labels(specs)
    by = {lb: [r for r in results if r["label"] == lb] for lb in labels}
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
    curves = {lb: [series(read_metrics(Path(s.cfg.run.out_dir)), HELDOUT) for s in specs if s.label == lb] for lb in labels}
    its = sorted(set.intersection(*[{i for i, _ in c} for cs in curves.values() for c in cs])) if curves else []
    if its:
        lines += ["", "Held-out strict gold at each evaluation (mean over seeds, percent):", "",
                  "| method | " + " | ".join(f"it {i}" for i in its) + " |", "|---" * (len(its) + 1) + "|"]
        for lb, cs in curves.items():
            lines.append(f"| {lb} | " + " | ".join(f"{100 * np.mean([dict(c)[i] for c in cs]):.1f}" for i in its) + " |")
    lines += ["", "## How each estimator was configured", "", *estimator_statement(specs)]
    lines += ["", "## Runs", "", "| run | status | iterations | minutes |", "|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['status']} | {r['iterations']} | {r['minutes']:.1f} |" for r in results]
    lines += ["", "Plots: " + ", ".join(f"[{f}](plots/{f})" for f, _, _ in CURVES) + ". Sample grids: `grids/`.", ""]
    path.write_text("\n".join(lines))


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
            for k, lb in enumerate(_labels(specs)):
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


def write_results(path: Path, results: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in results:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float)
                            else v) for k, v in r.items()})


@dataclass
class CompareResult:
    specs: list[RunSpec]
    launched: dict[str, int]  # run name -> exit status, for the runs this call trained
    results: list[dict]
    files: list[Path]

    @property
    def failed(self) -> list[str]:
        return [r["run"] for r in self.results if r["status"] in ("failed", "incomplete")]


def compare(config: str | None, methods: list[str], seeds: list[int], out: str | Path,
            sweeps: list[tuple[str, list]] | None = None, overrides: list[str] | None = None, jobs: int | None = None,
            threads: int = DEFAULT_THREADS, gold_target: float | None = None, command: str = "", log=print,
            progress: bool = True) -> CompareResult:
    """Plan, run what is unfinished, and write results.csv, summary.md, plots/ and grids/ into ``out`` (``progress``:
    a bar over the runs with each running run's latest iteration)."""
    out = Path(out)
    if (jobs is not None and jobs < 1) or threads < 1:
        raise ConfigError(f"--jobs and --threads must be >= 1, got {jobs} and {threads}")
    specs = plan(config, methods, seeds, out, sweeps or [], overrides or [])
    jobs = jobs or default_jobs(threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({
        "command": command, "config": config, "methods": methods, "seeds": seeds, "sweeps": sweeps or [],
        "overrides": overrides or [], "runs": [s.name for s in specs]}, indent=2) + "\n")
    log(f"compare: {len(specs)} runs ({len(_labels(specs))} methods/sweep values x {len(seeds)} seeds) in {out}, "
        f"{jobs} at a time x {threads} threads")
    codes = execute(specs, out, jobs, threads, log, progress=progress)
    results = [run_result(s, gold_target, codes.get(s.name)) for s in specs]
    write_results(out / "results.csv", results)
    write_summary(out / "summary.md", specs, results, command)
    files = [out / "results.csv", out / "summary.md", *plot_curves(out / "plots", specs),
             *sample_grids(out / "grids", specs)]
    log(f"wrote {out}/results.csv, summary.md, plots/, grids/")
    return CompareResult(specs, codes, results, files)


__all__ = ["CompareResult", "RunSpec", "compare", "parse_seeds", "parse_sweep", "plan"]
