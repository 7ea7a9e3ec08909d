"""A verdict per claim of the paper (1 faster training, 2 better out-of-domain, 3 less reward hacking, 4 better with
scale, 5 fidelity): supported, contradicted or not supported, from the paired 95% intervals of SLAS − DanceGRPO."""

from __future__ import annotations

from slas.evals.stats import ci_text, t_interval, welch

from .gold_tables import GOLD_COLS
from .stats import TAGS, is_hacked, paired, run_stats, side

SEEDS = 5  # seeds per arm of the study: a proxy part with fewer pairs gets no verdict yet


def gold_paired(arms: dict[str, dict[int, list[dict]]], arm: str, ref: str = "grpo") -> dict[str, dict]:
    """The part-2 quantities, paired (``paired`` of ``gold_stats``)."""
    keys = [k for k, *_ in GOLD_COLS] + [f"d_tag_{t}" for t in TAGS] + ["early_reward", "late_reward"]
    return paired(arms, arm, ref, keys)


def gold_verdicts(arms: dict[str, dict[int, list[dict]]], arm: str = "slas", ref: str = "grpo",
                  label: str = "") -> list[str]:
    """One verdict line per claim of the paper that part 2 tests (1, 2, 5), from the paired 95% intervals;
    ``label`` names the objective where it is not the default's."""
    if arm not in arms or ref not in arms:
        return [f"1. (needs finished {arm} and {ref} runs{', ' + label if label else ''})"]
    tag = f" ({label})" if label else ""
    d = gold_paired(arms, arm, ref)

    def show(k: str, sc: float = 100, unit: str = "pts", digits: int = 1) -> str:
        return ci_text(d[k], sc, digits, f" {unit}" if unit else "")

    speed = [side(d["auc"]), -side(d["to_5"]), -side(d["to_10"])]
    v1 = ("supported" if max(speed) > 0 and min(speed) >= 0 else "contradicted" if min(speed) < 0 and max(speed) <= 0
          else "not supported (the paired intervals hold 0)" if max(speed) == 0 else "mixed")
    v2 = {1: "supported", -1: "contradicted", 0: "not supported (the paired interval holds 0)"}[side(d["d_heldout"])]
    keys5 = [f"d_tag_{t}" for t in TAGS] + ["d_exact_count"]
    name5 = {k: k.removeprefix("d_tag_").replace("d_exact_count", "exact count") for k in keys5}
    falls = [name5[k] for k in keys5 if side(d[k]) < 0]
    rises = [f"{name5[k]} {show(k)}" for k in keys5 if side(d[k]) > 0]
    v5 = (f"contradicted ({', '.join(falls)} fall against {ref})" if falls else
          f"supported where resolved (no tag falls; resolved rises: {'; '.join(rises)})" if rises else
          "not supported (no per-tag or exact-count difference resolved)")
    return [f"1. faster training dynamics{tag}: {v1}. Mean held-out gain over the run {show('auc')}; iterations to +5 "
            f"{show('to_5', 1, 'iterations')}, to +10 {show('to_10', 1, 'iterations')} (seeds where both reached); "
            f"training reward over iterations 1-20 {show('early_reward', 1, '', 3)}, over the last 20 "
            f"{show('late_reward', 1, '', 3)}; in-domain strict accuracy, final {show('d_id')}, mean gain over the "
            f"run {show('auc_id')}.",
            f"2. better out-of-domain (held-out compositions){tag}: {v2}. Final held-out {show('d_heldout')}.",
            f"5. fidelity (per-tag, exact count){tag}: {v5}. Exact count {show('d_exact_count')}."]


def hack_verdict(arms: dict[str, dict[int, list[dict]]], label: str, arm: str = "slas", ref: str = "grpo") -> str:
    """Claim 3 under one proxy, from the paired peak hacking gap (the proxy's rise beyond the gold's, gold units)."""
    if arm not in arms or ref not in arms:
        return f"3. less reward hacking ({label}): not tested (needs finished {arm} and {ref} runs)"
    seeds = sorted(set(arms[arm]) & set(arms[ref]))
    d = paired(arms, arm, ref, ["peak_gap", "final_ood", "d_saturation", "d_heldout"], run_stats)
    n_hacked = {x: sum(is_hacked(arms[x][s]) for s in seeds) for x in (ref, arm)}

    def show(k: str, sc: float = 1, digits: int = 3, unit: str = "") -> str:
        return ci_text(d[k], sc, digits, unit, n=False)

    sign = side(d["peak_gap"])
    if len(seeds) < SEEDS:
        verdict = f"not tested yet ({len(seeds)} of {SEEDS} seeds)"
    elif sign == 0 and not any(n_hacked.values()):
        verdict = f"not tested (neither arm hacked at any of {len(seeds)} seeds)"
    else:
        verdict = {1: "contradicted", -1: "supported", 0: "not supported (the paired interval holds 0)"}[sign]
    return (f"3. less reward hacking ({label}): {verdict}. Peak hacking gap {show('peak_gap')} (n = {len(seeds)}); "
            f"saturation change {show('d_saturation')}; final OOD gold {show('final_ood', 100, 1, ' pts')}, "
            f"held-out {show('d_heldout', 100, 1, ' pts')}; seeds hacked: {ref} {n_hacked[ref]} of {len(seeds)}, "
            f"{arm} {n_hacked[arm]} of {len(seeds)}.")


def scale_verdict(sizes: dict[str, dict], label: str = "gold reward", key: str = "d_heldout", better: int = 1,
                  what: str = "held-out change", sc: float = 100, digits: int = 1, unit: str = " pts") -> str:
    """Claim 4 (SLAS's advantage holds or grows with size): the paired slas - grpo difference of ``key`` at each
    size, and the change of that difference from the smallest to the largest size (Welch: different runs).
    ``better`` is +1 where higher is better for SLAS (held-out gold), -1 where lower is (the hacking gap)."""
    per = {k: [a[key] - b[key] for a, b in zip(x["slas"], x["grpo"], strict=True)] for k, x in sizes.items()}
    cis = {k: t_interval(v) for k, v in per.items()}
    each = "; ".join(f"{k} {ci_text(c, sc, digits, unit)}" for k, c in cis.items())
    if len(sizes) < 2:
        return (f"4. better with scale ({label}): not tested (needs two model sizes with slas and grpo runs)"
                + (f". SLAS − DanceGRPO {what} on {each}." if sizes else ""))
    small, large = list(per)[0], list(per)[-1]
    trend = welch(per[large], per[small])
    signs = [better * side(c) for c in cis.values()]
    if better * side(cis[large]) < 0 or better * side(trend) < 0:
        verdict = "contradicted"
    elif all(x > 0 for x in signs):
        verdict = "supported"
    else:
        verdict = "not supported (the intervals hold 0)"
    return (f"4. better with scale ({label}): {verdict}. SLAS − DanceGRPO {what} per size: {each}; "
            f"{large} − {small} {ci_text(trend, sc, digits, unit, n=False)} (Welch).")


def claim_lines(verdicts: list[str]) -> list[str]:
    """Verdict lines ("3. less reward hacking ...") as paragraphs with a bold claim number: as a Markdown ordered
    list, "1. 2. 3. 3. 4. 5." would render renumbered 1 to 6."""
    out = []
    for v in verdicts:
        n, _, rest = v.partition(". ")
        out += [f"**{n}.** {rest}", ""]
    return out
