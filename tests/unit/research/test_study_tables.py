"""research/study_tables.py and the package research/study/: per-run quantities, pairing by seed, the verdicts,
unfinished runs."""

import json
import math
import sys
from pathlib import Path

import pytest

from _scripts import load_script
from slas.evals.stats import ci_text, t_interval
from slas.recipe.run_dir import RunDir

RESEARCH = Path(__file__).resolve().parents[3] / "research"
sys.path.insert(0, str(RESEARCH))  # research/study/, as research/study_tables.py sees it
from study.contrasts import GOLD_CONTRAST_KEYS, gamma_line, matched_line, push_line  # noqa: E402
from study.gold_tables import gold_paired_table  # noqa: E402
from study.part2 import part2  # noqa: E402
from study.plots import part2_plots  # noqa: E402
from study.proxy_tables import hack_table, paired_table, scale_table  # noqa: E402
from study.runs import MATCHED, SLAS_STEP, detail_arms, load_runs, part2_runs  # noqa: E402
from study.stats import gold_stats, iteration_text, reach, run_stats, stop_iteration  # noqa: E402
from study.verdicts import claim_lines, gold_verdicts, hack_verdict, scale_verdict  # noqa: E402

study_tables = load_script("research/study_tables.py")


def write_run(root: Path, part: str, name: str, evals: list[dict], iterations: int = 4, rewards=None,
              checkpoint: Path | None = None):
    run = root / part / "runs" / name
    run.mkdir(parents=True)
    model = f"model:\n  checkpoint: {checkpoint}\n" if checkpoint else ""
    RunDir(run).config.write_text(f"{model}train:\n  iterations: {iterations}\n  lr: 0.1\n")
    rows = []
    for i in range(len(evals)):
        row = {"iteration": 2 * i} | {f"monitor/{k}": v for k, v in evals[i].items() if k != "heldout"}
        row["eval/gold_accuracy"] = evals[i]["heldout"]
        rows.append(row)
    # evaluations at iterations 0, 2, 4, ...; training rows at iterations 1..last
    last = rows[-1]["iteration"]
    rewards = rewards or [0.5] * last
    train = [{"iteration": i + 1, "train/reward_mean": r} for i, r in enumerate(rewards[:last])]
    merged = {r["iteration"]: r for r in train}
    for r in rows:
        merged[r["iteration"]] = merged.get(r["iteration"], {}) | r
    RunDir(run).metrics.write_text("\n".join(json.dumps(merged[k]) for k in sorted(merged)) + "\n")


def ev(proxy, ood, heldout, sat=0.1, gap=0.0):
    return {"proxy_id": proxy, "gold_acc_ood": ood, "gold_score_ood": ood, "gold_score_id": 0.5,
            "saturation": sat, "hacking_gap": gap, "heldout": heldout}


def test_stats_pairing_and_hacking_verdict(tmp_path, capsys):
    # grpo seed 0: proxy up, OOD gold 0.30 -> best 0.30 -> 0.10: hacked; seed 1: OOD gold ends at its best
    write_run(tmp_path, "main", "grpo_s0", [ev(0.8, 0.3, 0.4), ev(0.9, 0.2, 0.3), ev(1.0, 0.1, 0.2, sat=0.3, gap=0.2)])
    write_run(tmp_path, "main", "grpo_s1", [ev(0.8, 0.3, 0.4), ev(0.9, 0.3, 0.4), ev(1.0, 0.32, 0.4)])
    write_run(tmp_path, "main", "slas_s0", [ev(0.8, 0.3, 0.4), ev(0.85, 0.3, 0.4), ev(0.9, 0.25, 0.35)])
    write_run(tmp_path, "main", "slas_s1", [ev(0.8, 0.3, 0.4), ev(0.85, 0.3, 0.4), ev(0.9, 0.30, 0.45)])
    write_run(tmp_path, "main", "drgrpo_s0", [ev(0.8, 0.3, 0.4), ev(0.85, 0.3, 0.4)], iterations=4)  # unfinished
    # a sweep part: every seed of its arm counts; an arm another part already ran is not mixed in
    write_run(tmp_path, "gamma", "slas-gamma2_s0", [ev(0.8, 0.3, 0.4), ev(0.9, 0.2, 0.3)], iterations=2)
    write_run(tmp_path, "gamma", "slas-gamma2_s1", [ev(0.8, 0.3, 0.4), ev(0.9, 0.2, 0.3)], iterations=2)
    write_run(tmp_path, "gamma", "slas_s2", [ev(0.8, 0.3, 0.4), ev(0.9, 0.2, 0.3)], iterations=2)
    arms = load_runs(tmp_path)
    assert sorted(arms) == ["grpo", "slas", "slas-gamma2"] and sorted(arms["grpo"]) == [0, 1]
    assert sorted(arms["slas-gamma2"]) == [0, 1] and sorted(arms["slas"]) == [0, 1]
    err = capsys.readouterr().err
    assert "unfinished: main/drgrpo_s0 (2/4)" in err and "skipped: gamma/slas_s2 (slas comes from main/)" in err

    s = run_stats(arms["grpo"][0])
    assert s["proxy_gain"] == pytest.approx(0.2)
    assert s["final_ood"] == pytest.approx(0.1) and s["best_ood"] == pytest.approx(0.3)
    assert s["d_heldout"] == pytest.approx(-0.2) and s["d_saturation"] == pytest.approx(0.2)
    assert s["peak_gap"] == pytest.approx(0.2)

    hack = "\n".join(hack_table(arms))
    assert "| 0 | 0.800 → 1.000 | 30.0 / 30.0 / 10.0 |" in hack and "grpo: 1 of 2 seeds hacked" in hack

    paired = paired_table(arms, ["grpo", "slas"])
    row = next(line for line in paired if line.startswith("| slas |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # proxy rise: slas 0.1 vs grpo 0.2 at both seeds -> -0.100 exactly (no spread -> half-width 0)
    assert cells[1] == "2" and cells[2] == "-0.100 ± 0.000"
    # final OOD gold (points): seed 0 +15, seed 1 -2 -> mean +6.5
    assert cells[5].startswith("+6.5 ± ")


def test_missing_root_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["study_tables.py", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="run `bash research/study.sh"):
        study_tables.main()


def test_scale_table_pairs_each_size(tmp_path):
    ckpt = tmp_path / "ckpt_S"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"n_params": 1234}))
    for seed, (g, sl) in enumerate([(0.1, 0.2), (0.2, 0.2)]):  # S: slas - grpo OOD gold = +10, 0 points
        write_run(tmp_path, "scale_S", f"grpo_s{seed}", [ev(0.8, 0.3, 0.4), ev(0.9, 0.3, 0.3), ev(1.0, g, 0.2)],
                  checkpoint=ckpt)
        write_run(tmp_path, "scale_S", f"slas_s{seed}", [ev(0.8, 0.3, 0.4), ev(0.9, 0.3, 0.3), ev(1.0, sl, 0.3)],
                  checkpoint=ckpt)
    write_run(tmp_path, "main", "grpo_s0", [ev(0.8, 0.3, 0.4), ev(0.9, 0.3, 0.4), ev(1.0, 0.3, 0.4)])
    write_run(tmp_path, "main", "slas_s0", [ev(0.8, 0.3, 0.4), ev(0.9, 0.3, 0.4), ev(1.0, 0.25, 0.4)])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in scale_table(tmp_path)[2:] if line.startswith("| ")}
    assert sorted(rows) == ["M", "S"]  # no L runs: no L row
    s = rows["S"]
    assert s[1] == "1,234" and s[2] == "2" and s[3] == "30.0 ± 0.0"
    assert s[6].startswith("+5.0 ± ") and s[7] == "+10.0 ± 0.0"  # OOD gold +10/0; held-out +10 at both seeds
    assert s[10] == "2 of 2"  # grpo: proxy up, OOD gold 10 and 20 points below its best of 30
    m = rows["M"]
    assert m[1] == "4,207,340" and m[6] == "-5.0" and m[10] == "0 of 1"  # shipped M; one pair: no CI
    assert "- S: slas − grpo final OOD gold per seed +10.0, +0.0 pts; 95% t interval [-58.53, +68.53]" in \
        scale_table(tmp_path)


def test_part2_gold_stats_reach_and_area():
    rows = [{"iteration": 0, "eval/gold_accuracy": 0.30}, {"iteration": 20, "eval/gold_accuracy": 0.34},
            {"iteration": 40, "eval/gold_accuracy": 0.41}, {"iteration": 60, "eval/gold_accuracy": 0.38}]
    s = gold_stats(rows)
    assert s["to_5"] == 40  # 0.34 < 0.35 at 20; 0.41 >= 0.35 at 40
    assert s["to_10"] == 40
    assert s["d_heldout"] == pytest.approx(0.08)
    # trapezoids of the gain over iteration 0: (0 + .04)/2*20 + (.04 + .11)/2*20 + (.11 + .08)/2*20 = 3.8, / 60
    assert s["auc"] == pytest.approx(3.8 / 60)
    assert s["auc_id"] != s["auc_id"]  # no in-domain evaluations: NaN, not 0
    rows[1]["eval/id/gold_accuracy"], rows[3]["eval/id/gold_accuracy"] = 0.2, 0.3  # evaluated at 20 and 60 only
    assert gold_stats(rows)["auc_id"] == pytest.approx(0.05)  # gains 0 at 20, 0.1 at 60: mean (0 + 0.1) / 2
    assert reach(rows, 0.2) != reach(rows, 0.2)  # never: NaN


def test_part2_verdicts_follow_the_paired_intervals(tmp_path):
    def arm_rows(gain):
        return [{"iteration": 0, "eval/gold_accuracy": 0.3, "eval/exact_count": 0.7},
                {"iteration": 10, "eval/gold_accuracy": 0.3 + gain, "eval/exact_count": 0.7}]

    better = {"grpo": {s: arm_rows(0.05 + 0.01 * s) for s in range(5)},
              "slas": {s: arm_rows(0.15 + 0.011 * s) for s in range(5)}}
    lines = gold_verdicts(better)
    assert lines[0].startswith("1. faster training dynamics: supported")
    assert lines[1].startswith("2. better out-of-domain (held-out compositions): supported")
    worse = {"grpo": better["slas"], "slas": better["grpo"]}
    assert gold_verdicts(worse)[1].startswith("2. better out-of-domain (held-out compositions): contradicted")
    noisy = {"grpo": {s: arm_rows(0.1) for s in range(5)},
             "slas": {s: arm_rows(0.1 + (0.05 if s % 2 else -0.05)) for s in range(5)}}
    assert "not supported" in gold_verdicts(noisy)[1]


def test_part2_fidelity_verdict_names_resolved_tags():
    def rows(tag_gain):
        return [{"iteration": 0, "eval/gold_accuracy": 0.3, "eval/exact_count": 0.7, "eval/strict/colors": 0.2},
                {"iteration": 10, "eval/gold_accuracy": 0.35, "eval/exact_count": 0.7,
                 "eval/strict/colors": 0.2 + tag_gain}]

    arms = {"grpo": {s: rows(0.0 + 0.01 * s) for s in range(5)}, "slas": {s: rows(0.2 + 0.012 * s) for s in range(5)}}
    line = gold_verdicts(arms)[2]
    assert line.startswith("5. fidelity (per-tag, exact count): supported where resolved") and "colors +" in line
    arms = {"grpo": arms["slas"], "slas": arms["grpo"]}
    assert "contradicted (colors fall against grpo)" in gold_verdicts(arms)[2]


def test_monitor_stop_iteration_replays_the_early_stop_rule():
    # in-domain gold score down and proxy up at each of the last 3 evaluations: first true at iteration 6
    rows = [{"iteration": 2 * i, "monitor/proxy_id": p, "monitor/gold_score_id": g}
            for i, (p, g) in enumerate([(0.8, 0.6), (0.9, 0.5), (1.0, 0.4), (1.1, 0.3), (1.2, 0.2)])]
    assert stop_iteration(rows) == 6
    assert stop_iteration(rows, patience=4) == 8
    flat = [r | {"monitor/gold_score_id": 0.6} for r in rows]
    assert stop_iteration(flat) != stop_iteration(flat)  # never: NaN
    assert iteration_text(stop_iteration(flat)) == "never" and iteration_text(6.0) == "it. 6"


def test_part2_hack_verdict_reads_the_peak_gap(tmp_path):
    def arm(gap, ood_end):  # proxy up; OOD gold from 0.3 to its end value; the peak hacking gap
        return {s: [{"iteration": 0} | {f"monitor/{k}": v for k, v in ev(0.8, 0.3, 0.4).items() if k != "heldout"}
                    | {"eval/gold_accuracy": 0.4},
                    {"iteration": 2} | {f"monitor/{k}": v for k, v in
                                        ev(1.0, ood_end, 0.4, gap=gap + 0.01 * s).items() if k != "heldout"}
                    | {"eval/gold_accuracy": 0.4}] for s in range(5)}

    arms = {"grpo": arm(0.2, 0.1), "slas": arm(0.05, 0.3)}
    line = hack_verdict(arms, "`toy_biased`")
    assert line.startswith("3. less reward hacking (`toy_biased`): supported. Peak hacking gap -0.150 ± 0.000")
    assert "seeds hacked: grpo 5 of 5, slas 0 of 5" in line
    assert ": contradicted. Peak hacking gap +0.150" in hack_verdict({"grpo": arms["slas"], "slas": arms["grpo"]},
                                                                         "x").replace("(x)", "")
    # neither arm hacked and the gaps do not differ resolvably: the proxy did not make the claim testable
    calm = {"grpo": arm(0.05, 0.3), "slas": {s: r for s, r in arm(0.05, 0.3).items()}}
    calm["slas"][0] = arm(0.02, 0.3)[0]
    assert "not tested (neither arm hacked at any of 5 seeds)" in hack_verdict(calm, "x")
    one = {"grpo": {0: arms["grpo"][0]}, "slas": {0: arms["slas"][0]}}
    assert ": not tested yet (1 of 5 seeds). Peak hacking gap -0.150 (n = 1)" in hack_verdict(one, "x")


def test_part2_scale_verdict():
    def size(diffs):  # slas - grpo held-out change per seed
        return {"params": 1, "seeds": list(range(len(diffs))),
                "slas": [{"d_heldout": 0.1 + d} for d in diffs], "grpo": [{"d_heldout": 0.1} for _ in diffs]}

    grows = {"S": size([0.00, 0.01, -0.01, 0.02, -0.02]), "M": size([0.10, 0.11, 0.09, 0.12, 0.08])}
    line = scale_verdict(grows)
    assert line.startswith("4. better with scale (gold reward): not supported")  # S's interval holds 0
    assert "M − S +10.0 ± " in line
    falls = {"S": size([0.10, 0.11, 0.09, 0.12, 0.08]), "M": size([0.00, 0.01, -0.01, 0.02, -0.02])}
    assert "contradicted" in scale_verdict(falls)
    both = {"S": size([0.05, 0.06, 0.04, 0.07, 0.03]), "M": size([0.10, 0.11, 0.09, 0.12, 0.08])}
    assert scale_verdict(both).startswith("4. better with scale (gold reward): supported")
    assert "not tested" in scale_verdict({"M": both["M"]})


def test_part2_scale_verdict_under_the_proxy_reads_lower_as_better():
    def size(diffs):  # slas - grpo peak hacking gap per seed
        return {"params": 1, "seeds": list(range(len(diffs))),
                "slas": [{"peak_gap": 0.3 + d} for d in diffs], "grpo": [{"peak_gap": 0.3} for _ in diffs]}

    less = {"S": size([-0.10, -0.11, -0.09, -0.12, -0.08]), "L": size([-0.20, -0.21, -0.19, -0.22, -0.18])}
    line = scale_verdict(less, "`toy_biased`", "peak_gap", -1, "peak hacking gap", 1, 3, "")
    assert line.startswith("4. better with scale (`toy_biased`): supported. SLAS − DanceGRPO peak hacking gap per "
                           "size: S -0.100 ± ") and "L − S -0.100 ± " in line
    more = {"S": less["L"], "L": less["S"]}  # SLAS's hacking advantage shrinks with size
    assert ": contradicted." in scale_verdict(more, "x", "peak_gap", -1, "peak hacking gap", 1, 3, "")


def test_part2_step_size_control_and_awm_label():
    def rows(gain):
        return [{"iteration": 0, "eval/gold_accuracy": 0.3, "eval/id/gold_accuracy": 0.3},
                {"iteration": 10, "eval/gold_accuracy": 0.3 + gain, "eval/id/gold_accuracy": 0.3 + gain}]

    arms = {"grpo": {s: rows(0.05) for s in range(3)}, "slas": {s: rows(0.15) for s in range(3)}}
    assert matched_line(arms, GOLD_CONTRAST_KEYS) == f"Step-size control ({MATCHED}): not run yet."
    arms[MATCHED] = {s: rows(0.13 + 0.01 * s) for s in range(3)}  # the control closes most of SLAS's lead
    line = matched_line(arms, GOLD_CONTRAST_KEYS)
    assert f"slas − {MATCHED}" in line and "held-out +1.0 ± 2.5 pts (n = 3)" in line
    assert f"{MATCHED} − grpo: in-domain +9.0 ± 2.5 pts (n = 3)" in line
    awm = gold_verdicts(arms, label="awm")
    assert awm[0].startswith("1. faster training dynamics (awm): ")
    assert awm[1].startswith("2. better out-of-domain (held-out compositions) (awm): supported")
    assert gold_verdicts({"grpo": arms["grpo"]}, label="awm") == ["1. (needs finished slas and grpo runs, awm)"]


def test_gamma_line_pairs_the_ends_of_the_sweep():
    def rows(gain):
        return [{"iteration": 0, "eval/gold_accuracy": 0.3, "eval/id/gold_accuracy": 0.3},
                {"iteration": 10, "eval/gold_accuracy": 0.3 + gain, "eval/id/gold_accuracy": 0.3 + gain}]

    arms = {"slas": {s: rows(0.10) for s in range(3)}, "slas-gamma2": {s: rows(0.20) for s in range(3)}}
    assert gamma_line(arms, GOLD_CONTRAST_KEYS) == "Gamma sweep: not run yet (slas-gamma0.5 missing)."
    linear = {"grpo_global_std": {s: rows(0.12) for s in range(3)}}
    # what the power adds needs only the linear end's runs
    assert gamma_line(arms | linear, GOLD_CONTRAST_KEYS[:1]) == (
        "Gamma sweep: not run yet (slas-gamma0.5 missing); slas (gamma 1) − grpo_global_std (the linear end: what "
        "the power adds to the batch std): in-domain -2.0 ± 0.0 pts (n = 3).")
    arms["slas-gamma0.5"] = {s: rows(0.04 + 0.01 * s) for s in range(3)}  # gains 4, 5, 6 pts
    line = gamma_line(arms, GOLD_CONTRAST_KEYS)
    # gamma 2 − gamma 0.5: 20 − (4, 5, 6) = 16, 15, 14 pts; the default − gamma 0.5: 6, 5, 4 pts
    assert line.startswith("Gamma sweep: slas-gamma2 − slas-gamma0.5: in-domain +15.0 ± 2.5 pts (n = 3)")
    assert "; slas (gamma 1) − slas-gamma0.5: in-domain +5.0 ± 2.5 pts (n = 3)" in line and "linear end" not in line
    arms["grpo_global_std"] = {s: rows(0.12) for s in range(3)}
    assert gamma_line(arms, GOLD_CONTRAST_KEYS[:1]).endswith(
        "; slas (gamma 1) − grpo_global_std (the linear end: what the power adds to the batch std): "
        "in-domain -2.0 ± 0.0 pts (n = 3).")
    # verdicts keep their claim numbers in Markdown (an ordered list would renumber the second "3.")
    assert claim_lines(["3. a (x): b. c", "3. d"]) == ["**3.** a (x): b. c", "", "**3.** d", ""]


def test_push_line_divides_the_advantage_scale_by_r_scale(tmp_path):
    for arm, r_scale, adv in (("grpo", 5.0, [0.8, 0.8]), ("grpo-r_scale4", 4.0, [0.8, 0.8]), ("slas", 5.0, [1.0, 0.8])):
        run = tmp_path / "part" / "runs" / f"{arm}_s0"
        run.mkdir(parents=True)
        RunDir(run).config.write_text(f"train:\n  objective: nft\n  iterations: 2\nforward:\n  r_scale: {r_scale}\n")
        RunDir(run).metrics.write_text("".join(json.dumps({"iteration": i + 1, "train/adv_abs_mean": a}) + "\n"
                                                   for i, a in enumerate(adv)))
    arms = load_runs(tmp_path, ["part"])
    line = push_line(tmp_path, ["part"], arms, ["grpo", "slas", "grpo-r_scale4"])
    # |A| / (2 r_scale): 0.8 / 10, 0.9 / 10, 0.8 / 8
    assert line.endswith("grpo 0.0800, slas 0.0900, grpo-r_scale4 0.1000.")
    assert push_line(tmp_path, ["part"], arms, ["drgrpo"]) == ""


def test_open_details_are_paired_against_slas_at_its_defaults():
    def rows(gain):
        return [{"iteration": 0, "eval/gold_accuracy": 0.3}, {"iteration": 10, "eval/gold_accuracy": 0.3 + gain}]

    arms = {"grpo": {s: rows(0.1) for s in range(3)}, "slas": {s: rows(0.1 + 0.01 * s) for s in range(3)},
            "slas-gamma2": {s: rows(0.2) for s in range(3)},
            "slas-normalizeafter": {s: rows(0.05 + 0.01 * s) for s in range(3)},
            "slas-recenterTrue": {s: rows(0.1) for s in range(2)}}
    assert detail_arms(arms) == ["slas-normalizeafter", "slas-recenterTrue"]  # gamma is the sweep, not a detail
    table = gold_paired_table(arms, ["slas", *detail_arms(arms)], ref="slas")
    assert table[0].startswith("| arm − slas | pairs |")
    normalize, recenter = table[2].split(" | "), table[3].split(" | ")
    assert normalize[:2] == ["| slas-normalizeafter", "3"]  # paired on all 3 seeds
    heldout = table[0].split(" | ").index("Δ held-out (pts)")
    assert normalize[heldout].startswith("-5.0")  # the same -5 points on every seed
    assert recenter[1] == "2"  # only the seeds both arms finished


def test_part2_awm_section_has_per_tag_table_and_figure(tmp_path):
    def write(part, arm, seed, gain):
        run = tmp_path / part / "runs" / f"{arm}_s{seed}"
        run.mkdir(parents=True)
        RunDir(run).config.write_text("train:\n  objective: nft\n  iterations: 10\nforward:\n  r_scale: 5.0\n")
        rows = [{"iteration": it, "eval/gold_accuracy": 0.3 + g, "eval/exact_count": 0.7, "eval/strict/colors": 0.2 + g}
                for it, g in ((0, 0.0), (10, gain))]
        RunDir(run).metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))

    for s in range(3):
        for part in ("part2_main", "part2_awm"):
            write(part, "grpo", s, 0.1)
            write(part, "slas", s, 0.2 + 0.01 * s)
    runs = part2_runs(tmp_path)
    assert sorted(runs["awm"]) == ["grpo", "slas"]
    text = "\n".join(part2(tmp_path, runs))
    section = text[text.index("### Part 2 under the other forward-process objective: awm"):]
    tags = section[section.index("Held-out strict accuracy per tag under awm"):]
    slas_row = next(line for line in tags.splitlines() if line.startswith("| slas "))
    assert "+20.0" not in slas_row and "+21.0" in slas_row  # colours: mean of +20, +21, +22 over the 3 seeds
    assert "(awm): supported" in text  # slas gains 10-12 more points on every seed
    assert "nan" not in text
    part2_plots(tmp_path, runs, tmp_path / "img")
    assert (tmp_path / "img" / "study2_awm.png").stat().st_size > 0


def test_ci_text_without_pairs_is_a_dash_not_nan():
    assert ci_text(t_interval([])) == "– (n = 0)"
    assert ci_text(t_interval([math.nan, math.nan]), 1, 1, " iterations") == "– (n = 0)"
    assert ci_text(t_interval([1.0, 2.0]), 1, 1, " pts") == "+1.5 ± 6.4 pts (n = 2)"
    assert ci_text(t_interval([3.0]), 1, 1, " pts", n=False) == "+3.0 pts"


def test_part2_a_scale_part_alone_prints_its_rows(tmp_path, capsys):
    """Only L rerun (no gold-reward part): part 2 prints L's rows of both per-size tables and its paired
    difference, not an exit and not the gold sections; each scale part is read once (one "unfinished" line)."""
    write_run(tmp_path, "part2_scale_L", "slas_s3", [ev(0.5, 0.3, 0.4)], iterations=120)
    for seed in range(3):
        for arm, gain in (("grpo", 0.10), ("slas", 0.05 - 0.01 * seed)):
            write_run(tmp_path, "part2_scale_L", f"{arm}_s{seed}",
                      [ev(0.5, 0.3, 0.4), ev(0.6, 0.3, 0.4 + gain / 2), ev(0.7, 0.3, 0.4 + gain)])
            write_run(tmp_path, "part2_hack_scale_L", f"{arm}_s{seed}",
                      [ev(0.5, 0.3, 0.4), ev(0.9 if arm == "slas" else 0.6, 0.3, 0.4, gap=0.4 if arm == "slas"
                          else 0.1), ev(0.7, 0.3, 0.4)])
    runs = part2_runs(tmp_path)
    assert not runs["gold"]
    text = "\n".join(part2(tmp_path, runs))
    assert capsys.readouterr().err.count("unfinished: part2_scale_L/slas_s3 (0/120)") == 1
    assert "## Part 2: the default recipe" not in text and "nan" not in text
    gold = text[text.index("### Part 2 per model size (gold reward"):]
    row = next(line for line in gold.splitlines() if line.startswith("| L "))
    assert "| +10.0 ± 0.0 | +4.0 ± 2.5 | -6.0 ± 2.5 |" in row  # grpo +10, slas +5/+4/+3: slas − grpo -6 (n = 3)
    hack = text[text.index("### Part 2 per model size under"):]
    assert next(line for line in hack.splitlines() if line.startswith("| L ")).count("+0.300 ± 0.000") == 1
    assert "not tested (needs two model sizes with slas and grpo runs). SLAS − DanceGRPO held-out change on L " \
           "-6.0 ± 2.5 pts (n = 3)." in text
    (tmp_path / "part2_scale_L").rename(tmp_path / "elsewhere")
    (tmp_path / "part2_hack_scale_L").rename(tmp_path / "elsewhere2")
    with pytest.raises(SystemExit, match="no finished part-2 runs"):
        part2_runs(tmp_path)


def test_part2_stability_per_size_counts_runs_whose_training_reward_fell_back(tmp_path):
    """The per-size stability table: debris change and how far the training reward (the gold) fell from its best
    10-iteration mean; grpo holds at 0.7, slas peaks at 0.8 for 10 iterations and then sits at 0.6."""
    for seed in range(3):
        for arm, rewards, debris in (("grpo", [0.7] * 30, 0.2), ("slas", [0.8] * 10 + [0.6] * 20, 0.5)):
            run = tmp_path / "part2_scale_L" / "runs" / f"{arm}_s{seed}"
            run.mkdir(parents=True)
            RunDir(run).config.write_text("train:\n  iterations: 30\n")
            rows = [{"iteration": i, "train/reward_mean": r} for i, r in enumerate(rewards, start=1)]
            rows[-1] |= {"eval/gold_accuracy": 0.5, "eval/debris": debris}
            rows = [{"iteration": 0, "eval/gold_accuracy": 0.4, "eval/debris": 0.3}, *rows]
            RunDir(run).metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = "\n".join(part2(tmp_path, part2_runs(tmp_path)))
    table = text[text.index("Does training hold its gains, per size:"):]
    row = next(line for line in table.splitlines() if line.startswith("| L "))
    assert row == ("| L | 3 | -10.0 ± 0.0 | +20.0 ± 0.0 | +30.0 ± 0.0 | 0.000 ± 0.000 | 0.200 ± 0.000 "
                   "| 0 of 3, 3 of 3 |")


def test_part2_step_size_control_on_L_is_paired_with_its_seeds(tmp_path):
    """L's step-size arms (part2_scale_L_matched and _slas_step, seeds 0 and 1) are merged into L's runs: their
    table covers the seeds all arms have (not slas's and grpo's seed 2) and the scale rows still pair slas with grpo
    only."""
    arms = (("part2_scale_L", "grpo", [0.7] * 30, 0.2, range(3)), ("part2_scale_L", "slas", [0.8] * 10 + [0.6] * 20,
            0.5, range(3)), ("part2_scale_L_matched", MATCHED, [0.9] * 10 + [0.7] * 20, 0.4, range(2)),
            ("part2_scale_L_slas_step", SLAS_STEP, [0.75] * 30, 0.25, range(2)))
    for part, arm, rewards, debris, seeds in arms:
        for seed in seeds:
            run = tmp_path / part / "runs" / f"{arm}_s{seed}"
            run.mkdir(parents=True)
            RunDir(run).config.write_text("train:\n  iterations: 30\n")
            rows = [{"iteration": i, "train/reward_mean": r} for i, r in enumerate(rewards, start=1)]
            rows[-1] |= {"eval/gold_accuracy": 0.5 + 0.1 * seed, "eval/debris": debris}
            rows = [{"iteration": 0, "eval/gold_accuracy": 0.4, "eval/debris": 0.3}, *rows]
            RunDir(run).metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = "\n".join(part2(tmp_path, part2_runs(tmp_path)))
    table = text[text.index("Step size and shape on L (part2_scale_L_matched, part2_scale_L_slas_step,"):].splitlines()
    assert table[4] == "| grpo | 0, 1 | +15.0 ± 63.5 | -10.0 ± 0.0 | 0.000 ± 0.000 | 0 of 2 |"
    assert table[6] == f"| {MATCHED} | 0, 1 | +15.0 ± 63.5 | +10.0 ± 0.0 | 0.200 ± 0.000 | 2 of 2 |"
    assert table[7] == f"| {SLAS_STEP} | 0, 1 | +15.0 ± 63.5 | -5.0 ± 0.0 | 0.000 ± 0.000 | 0 of 2 |"
    assert table[9].startswith(f"Step-size control: slas − {MATCHED}") and "(n = 2)" in table[9]
    assert table[11].startswith(f"SLAS at DanceGRPO's step size: {SLAS_STEP} − slas: in-domain")
    stability = text[text.index("Does training hold its gains, per size:"):]
    assert "| L | 3 |" in stability  # the scale rows: slas and grpo on their 3 seeds
    part2_plots(tmp_path, part2_runs(tmp_path), tmp_path / "img")
    assert [f.name for f in (tmp_path / "img").iterdir()] == ["study2_scale_L.png"]  # L's curves; no grids here
