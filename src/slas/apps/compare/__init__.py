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

Resumable: a run whose metrics log reached ``train.iterations`` (or that stopped early) is skipped, one with a
checkpoint is continued with ``slas train --resume``, and the rest start. A run directory made with another
config is an error, never silently reused.

Outputs in ``--out`` (docs/hacking.md): ``runs/<run>/`` (the run directories), ``configs/<run>.yaml``,
``logs/<run>.log``, ``results.csv`` (one row per run: final and best metrics), ``summary.md`` (mean +- 95%
t-interval over seeds per method, how each estimator was configured), ``plots/*.png`` (curves with CI bands) and
``grids/iter_*.png`` (each method's sample grid side by side at fixed iterations).

One concept per module: ``planning`` (the runs and their status), ``pool`` (the training processes), ``results``
(results.csv, summary.md) and ``figures`` (plots/, grids/); this module ties them together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slas.apps.compare.figures import plot_curves, sample_grids
from slas.apps.compare.planning import GRIDS, PLOTS, RunSpec, labels, parse_seeds, parse_sweep, plan
from slas.apps.compare.pool import DEFAULT_THREADS, default_jobs, execute
from slas.apps.compare.results import run_result, write_results, write_summary
from slas.config import ConfigError
from slas.recipe.threads import load_warning

__all__ = ["CompareResult", "RunSpec", "compare", "parse_seeds", "parse_sweep", "plan"]


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
    log(f"compare: {len(specs)} runs ({len(labels(specs))} methods/sweep values x {len(seeds)} seeds) in {out}, "
        f"{jobs} at a time x {threads} threads")
    if busy := load_warning(threads, min(jobs, len(specs)), "--threads N (or fewer --jobs)"):
        log(busy)
    codes = execute(specs, out, jobs, threads, log, progress=progress)
    results = [run_result(s, gold_target, codes.get(s.name)) for s in specs]
    write_results(out / "results.csv", results)
    write_summary(out / "summary.md", specs, results, command)
    files = [out / "results.csv", out / "summary.md", *plot_curves(out / PLOTS, specs),
             *sample_grids(out / GRIDS, specs)]
    log(f"wrote {out}/results.csv, summary.md, {PLOTS}/, {GRIDS}/")
    return CompareResult(specs, codes, results, files)
