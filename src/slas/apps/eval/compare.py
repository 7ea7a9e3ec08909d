"""``slas eval --compare``: two results of the same suite over the same images, B versus A image by image, with
paired bootstrap intervals (``slas.evals.stats``)."""

from __future__ import annotations

import json
from pathlib import Path

from slas.apps.eval.options import RESULTS_FILE, SUMMARY_FILE, EvalError
from slas.evals.stats import MIN_N, paired_bootstrap, wilson

# per suite: the per-image values `--compare` tests, and whether the headline averages over tags (GenEval) or images
COMPARABLE: dict[str, tuple[tuple[str, ...], bool]] = {
    "geneval": (("correct",), True),
    "toyworld": (("correct", "geneval_correct"), True),
    "reward": (("reward",), False),
}


def load_results(folder: Path) -> tuple[dict, list[dict]]:
    """``summary.json`` and the records of ``results.jsonl`` of a ``slas eval`` output directory."""
    folder = Path(folder)
    s, r = folder / SUMMARY_FILE, folder / RESULTS_FILE
    if not s.is_file() or not r.is_file():
        raise EvalError(f"{folder}: not a `slas eval` output directory (needs {SUMMARY_FILE} and {RESULTS_FILE})")
    try:
        summary = json.loads(s.read_text())
        records = [json.loads(line) for line in r.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise EvalError(f"{folder}: unreadable results: {e}") from None
    return summary, records


def _key(r: dict) -> tuple[str, int]:
    return (r.get("metadata") or r["prompt"], r["sample"])


def compare_results(a_dir: Path, b_dir: Path, n_boot: int = 10_000, seed: int = 0) -> dict:
    """B versus A, image by image: per metric, each side's score, B - A and its 95% paired bootstrap interval
    (``stats.paired_bootstrap``: prompts resampled within tags, both sides of a prompt kept together).

    Both directories must hold the same suite over the same images (same prompts and sample numbers; same seeds when
    recorded), e.g. two models evaluated with the same flags.
    """
    (sa, ra), (sb, rb) = load_results(a_dir), load_results(b_dir)
    suite = sa["suite"]
    if sb["suite"] != suite:
        raise EvalError(f"cannot compare a {suite} result ({a_dir}) with a {sb['suite']} result ({b_dir})")
    if suite not in COMPARABLE:
        raise EvalError(f"--compare handles {sorted(COMPARABLE)} results, not {suite}")
    if suite == "reward" and sa.get("reward") != sb.get("reward"):
        raise EvalError(f"the two results score different rewards: {sa.get('reward')} and {sb.get('reward')}")
    ia, ib = {_key(r): r for r in ra}, {_key(r): r for r in rb}
    if len(ia) != len(ra) or len(ib) != len(rb):
        raise EvalError("a result file lists the same (prompt, sample) twice")
    if set(ia) != set(ib):
        raise EvalError(f"the results are not paired: {len(ia)} images in {a_dir}, {len(ib)} in {b_dir}, "
                        f"{len(set(ia) & set(ib))} in common; evaluate both with the same prompts and sampling flags")
    keys = list(ia)
    bad = [k for k in keys if None not in (ia[k].get("seed"), ib[k].get("seed")) and ia[k]["seed"] != ib[k]["seed"]]
    if bad:
        raise EvalError(f"{len(bad)} paired images were sampled with different seeds, e.g. {bad[0][0][:60]!r}")
    metrics, by_tag = COMPARABLE[suite]
    clusters = [k[0] for k in keys]
    strata = [ia[k]["tag"] for k in keys] if by_tag else None
    out = {"suite": suite, "a": str(a_dir), "b": str(b_dir), "a_model": sa.get("model"), "b_model": sb.get("model"),
           "n_images": len(keys), "n_prompts": len(set(clusters)),
           "method": f"paired cluster bootstrap over prompts{' within tags' if by_tag else ''}, {n_boot} replicates, "
                     f"seed {seed}, percentile 95% interval",
           "metrics": {}}
    for m in metrics:
        va, vb = [float(ia[k][m]) for k in keys], [float(ib[k][m]) for k in keys]
        r = paired_bootstrap(va, vb, clusters, strata, n_boot=n_boot, seed=seed)
        r["n"] = len(keys)
        binary = set(va) | set(vb) <= {0.0, 1.0}  # a proportion: each side gets its Wilson interval
        for v in [*r["per_stratum"].values(), r]:
            if binary:
                v["wilson_a"], v["wilson_b"] = list(wilson(v["a"] * v["n"], v["n"])), list(wilson(v["b"] * v["n"], v["n"]))
            v["resolved"] = v["n"] >= MIN_N and (v["ci95"][0] > 0 or v["ci95"][1] < 0)
        out["metrics"][m] = r
    return out


_METRIC_LABELS = {("geneval", "correct"): "GenEval accuracy (correct)",
                  ("toyworld", "correct"): "strict gold accuracy (correct)",
                  ("toyworld", "geneval_correct"): "GenEval rules (geneval_correct)",
                  ("reward", "reward"): "mean reward"}


def format_compare(cmp: dict) -> str:
    """The table of ``slas eval --compare``: per tag and overall, n, each side (an accuracy with its Wilson 95%
    interval), and B - A with its paired bootstrap interval; below ``stats.MIN_N`` images "n too small" instead of
    a difference, and "not resolved" when the interval holds 0."""
    fmt = (lambda v: f"{v:.1%}") if cmp["suite"] != "reward" else (lambda v: f"{v:.4f}")
    lines = [f"A = {cmp['a']} ({cmp['a_model']})", f"B = {cmp['b']} ({cmp['b_model']})"]
    for metric, r in cmp["metrics"].items():
        label = _METRIC_LABELS.get((cmp["suite"], metric), metric)
        lines.append(f"\n{label}: {cmp['n_images']} paired images, {cmp['n_prompts']} prompts")
        wide = "wilson_a" in r
        side = 24 if wide else 9
        lines.append(f"{'':<15}{'n':>6}  {'A' + (' (95% Wilson)' if wide else ''):<{side}} "
                     f"{'B' + (' (95% Wilson)' if wide else ''):<{side}} {'B - A':>8}   95% CI (paired)")
        rows = list(r["per_stratum"].items()) if len(r["per_stratum"]) > 1 else []
        for name, v in rows + [("overall", r)]:
            n = v.get("n", cmp["n_images"])
            sides = [fmt(v[s]) + (f" [{fmt(v['wilson_' + s][0])}, {fmt(v['wilson_' + s][1])}]" if wide else "")
                     for s in "ab"]
            head = f"{name:<15}{n:>6}  {sides[0]:<{side}} {sides[1]:<{side}} "
            lo, hi = v["ci95"]
            diff = ("+" if v["diff"] > 0 else "") + fmt(v["diff"])
            if n < MIN_N:  # a bootstrap over a handful of images is degenerate (e.g. [0.0%, 0.0%] at n = 4)
                lines.append(head + f"{'':>8}   n too small (< {MIN_N}): not resolved")
            elif lo > 0 or hi < 0:
                lines.append(head + f"{diff:>8}   [{fmt(lo)}, {fmt(hi)}] *")
            else:
                lines.append(head + f"{diff:>8}   [{fmt(lo)}, {fmt(hi)}] not resolved")
    lines.append(f"\n* the interval excludes 0. {cmp['method']}. Below {MIN_N} images no difference is shown.")
    return "\n".join(lines)
