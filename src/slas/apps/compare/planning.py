"""``slas compare``'s plan: every run (method x seed x sweep values) as a validated config, and each run's status
(done, resume, new) from its run directory."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from slas.algo import advantages
from slas.config import Config, ConfigError, _set_dotted, from_dict, load_config
from slas.recipe.metrics import read_metrics
from slas.recipe.run_dir import RunDir

# a comparison's output folder OUT: runs/<run>/ (the run directories), configs/<run>.yaml, logs/<run>.log, plots/*.png
# and grids/iter_*.png (slas.apps.compare.figures), results.csv and summary.md (slas.apps.compare.results)
RUNS, CONFIGS, LOGS, PLOTS, GRIDS = "runs", "configs", "logs", "plots", "grids"


@dataclass
class RunSpec:
    name: str  # directory name under OUT/runs
    label: str  # what the run is aggregated under: the method, plus its sweep values
    method: str
    seed: int
    sweep: dict = field(default_factory=dict)  # swept key -> value (the keys that apply to this method)
    cfg: Config | None = None


def parse_sweep(spec: str) -> tuple[str, list]:
    """``"advantage.params.gamma=0.25,0.5,1"`` -> (key, [0.25, 0.5, 1]); values parsed as YAML."""
    key, sep, raw = spec.partition("=")
    values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    if not sep or not key.strip() or not values:
        raise ConfigError(f"--sweep {spec!r} must look like section.key=v1,v2,..., e.g. advantage.params.gamma=0.5,1,2")
    return key.strip(), values


def parse_seeds(spec: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"0,3,7"`` -> those seeds; ``"3,"`` -> seed 3 alone (a bare number is a count)."""
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()] if "," in spec else list(range(int(spec)))
    except ValueError:
        raise ConfigError(f"--seeds {spec!r} must be a count (5 = seeds 0..4) or a comma list (0,3,7)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        hint = f" (a bare number is a count; for seed {spec} alone write --seeds {spec},)" if spec.strip() == "0" else ""
        raise ConfigError(f"--seeds {spec!r}: give at least one seed, each >= 0 and distinct{hint}")
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
                    _build(base, m, {key: v}, 0, out / RUNS / "_")
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
                specs.append(RunSpec(name, label, m, s, sweep, _build(base, m, sweep, s, out / RUNS / name)))
    # seed-major order (stable: methods keep their order within a seed), so that an interrupted comparison
    # has every method at the same seeds rather than some methods finished and others not started
    specs.sort(key=lambda spec: seeds.index(spec.seed))
    return specs


def labels(specs: list[RunSpec]) -> list[str]:
    """The labels of ``specs`` (method plus sweep values), in plan order, each once."""
    return list(dict.fromkeys(s.label for s in specs))


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
