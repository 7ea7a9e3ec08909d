"""research/slas_scale.py on synthetic `slas compare` folders: the CSV's columns by hand, the fall-back mark, the
late push, the paired interval and the figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from scipy.stats import t as student_t

from _scripts import load_script

sc = load_script("research/slas_scale.py")  # puts research/ on sys.path, for research/study/
from study.stats import fall_back_start, reward_drop  # noqa: E402

T = 40


def _write(out: Path, name: str, rewards, evals: dict, push: dict, model: str = "toy_L", iterations: int = T,
           fresh: float | None = None) -> Path:
    run = out / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  checkpoint: {model}\ntrain:\n  iterations: {iterations}\n")
    rows = []
    for it in range(len(rewards) + 1):
        row: dict = {"iteration": it}
        if it:
            row["train/reward_mean"] = rewards[it - 1]
            row |= {k: f(it) for k, f in push.items()}
        if it in evals:
            row["eval/gold_accuracy"], row["eval/id/gold_accuracy"] = evals[it]
        rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if fresh is not None:
        (run / "fresh_heldout.json").write_text(json.dumps({"overall_strict": fresh}))
    return run


# slas, seed 0: rises 0.32 -> 0.70 over 20 iterations, then sits at 0.5. 10-iteration means 0.41, 0.61, 0.5, 0.5;
# the last 20 average 0.5: 0.11 below the best, so it fell back. Its push on r grows 1.5x in the second half.
RISE_FALL = [0.3 + 0.02 * i for i in range(1, 21)] + [0.5] * 20
# grpo, seed 0: rises 0.31 -> 0.60 over 30 iterations, then flat: means 0.355, 0.455, 0.555, 0.6; last 20 0.5775
RISE_HOLD = [0.3 + 0.01 * i for i in range(1, 31)] + [0.6] * 10
SLAS_PUSH = {"train/r_push_informative": lambda i: 0.1 if i <= 20 else 0.15,
             "train/adv_abs_mean_informative": lambda i: 1.0 if i <= 20 else 3.0}
GRPO_PUSH = {"train/adv_abs_mean_informative": lambda i: 0.8}


@pytest.fixture
def outs(tmp_path):
    l_out, m_out = tmp_path / "part2_scale_L", tmp_path / "m"
    _write(l_out, "slas_s0", RISE_FALL, {0: (0.30, 0.40), 20: (0.50, 0.60), 40: (0.45, 0.55)}, SLAS_PUSH, fresh=0.3125)
    _write(l_out, "grpo_s0", RISE_HOLD, {0: (0.30, 0.40), 40: (0.60, 0.70)}, GRPO_PUSH)
    _write(l_out, "slas_s1", RISE_FALL, {0: (0.32, 0.40), 40: (0.40, 0.50)}, SLAS_PUSH)
    _write(l_out, "grpo_s1", RISE_HOLD, {0: (0.32, 0.40), 40: (0.52, 0.65)}, GRPO_PUSH)
    _write(l_out, "slas-sigma_decay0.9_s0", RISE_HOLD[:20], {0: (0.3, 0.4)}, SLAS_PUSH)  # unfinished: 20 of 40
    _write(m_out, "slas_s0", RISE_HOLD, {0: (0.36, 0.5), 40: (0.46, 0.6)}, {}, model="toy_M")
    return l_out, m_out


def test_fall_back_rule_and_mark_by_hand():
    rows = [{"iteration": i + 1, "train/reward_mean": v} for i, v in enumerate(RISE_FALL)]
    assert reward_drop(rows) == pytest.approx(0.11)
    # trailing 10-iteration means after the best block (iterations 11-20, mean 0.61): at iteration 26 (16-26) it is
    # (0.62 + ... + 0.70 + 6 x 0.5) / 10 = 0.568, at 27 (0.66 + 0.68 + 0.70 + 7 x 0.5) / 10 = 0.554 < 0.61 - 0.05,
    # and it stays lower to the end
    assert fall_back_start(rows) == 27
    hold = [{"iteration": i + 1, "train/reward_mean": v} for i, v in enumerate(RISE_HOLD)]
    assert reward_drop(hold) == pytest.approx(0.6 - 0.5775) and fall_back_start(hold) is None
    # a run that comes back within 0.05 at its end has no mark
    back = [{"iteration": i + 1, "train/reward_mean": v} for i, v in enumerate(RISE_FALL + [0.7] * 10)]
    assert fall_back_start(back) is None


def test_csv_columns_by_hand(outs, tmp_path, capsys):
    path = tmp_path / "slas_scale.csv"
    assert sc.main(["csv", *map(str, outs), "--csv", str(path)]) == 0
    assert "unfinished: " in capsys.readouterr().err  # slas-sigma_decay0.9_s0 stopped at 20 of 40
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == sc.COLUMNS + ["fresh_heldout"]
    got = {(r["model"], r["arm"], r["seed"]): r for r in rows}
    assert sorted(got) == [("L", "grpo", "0"), ("L", "grpo", "1"), ("L", "slas", "0"), ("L", "slas", "1"),
                           ("M", "slas", "0")]
    s0 = got["L", "slas", "0"]
    assert {k: s0[k] for k in sc.COLUMNS[3:]} == {"base_heldout": "30", "final_heldout": "45", "best_heldout": "50",
                                                  "final_indomain": "55", "fell_back": "true", "late_push": "1.5"}
    assert s0["fresh_heldout"] == "31.25"
    g0 = got["L", "grpo", "0"]
    assert (g0["final_heldout"], g0["fell_back"], g0["late_push"], g0["fresh_heldout"]) == ("60", "false", "1", "")
    assert got["M", "slas", "0"]["late_push"] == ""  # no push diagnostics logged


def test_paired_interval_from_the_csv(outs, tmp_path, capsys):
    path = tmp_path / "slas_scale.csv"
    sc.main(["csv", *map(str, outs), "--csv", str(path)])
    table = sc.read_csv(path)
    ci = sc.paired(table, "slas", "grpo")  # only L has both
    # per seed: 45 - 60 = -15 and 40 - 52 = -12; mean -13.5, sd 2.1213, half t_{0.975, 1} sd / sqrt 2
    half = student_t.ppf(0.975, 1) * math.sqrt(4.5) / math.sqrt(2)
    assert ci["model"] == "L" and ci["seeds"] == [0, 1] and ci["n"] == 2
    assert ci["mean"] == pytest.approx(-13.5) and ci["half"] == pytest.approx(half)
    capsys.readouterr()
    assert sc.main(["paired", "slas", "grpo", "--csv", str(path)]) == 0
    assert capsys.readouterr().out.strip() == (f"final_heldout: slas - grpo on model L = -13.50 ± {half:.2f} (95% t, "
                                               f"n = 2 seeds [0, 1], [{-13.5 - half:+.2f}, {-13.5 + half:+.2f}]): "
                                               "not resolved")
    assert sc.paired(table, "slas", "grpo", column="final_indomain")["mean"] == pytest.approx(-15.0)
    assert sc.main(["paired", "slas", "drgrpo", "--csv", str(path)]) == 2
    assert "share the models []" in capsys.readouterr().err
    assert sc.main(["paired", "slas", "grpo", "--model", "M", "--csv", str(path)]) == 2


def test_plots_one_figure_per_model_and_seed(outs, tmp_path):
    assert sc.main(["plot", *map(str, outs), "--out", str(tmp_path / "plots")]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["slas_scale_L_s0.png", "slas_scale_L_s1.png",
                                                                      "slas_scale_M_s0.png"]


def test_not_a_compare_folder_is_one_error_line(tmp_path, capsys):
    assert sc.main(["csv", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} is not an output folder of `slas compare`")


def test_net_push_reads_nft_r_mean_else_adv_mean():
    rows = [{"iteration": 1, "train/r_mean": 0.48, "train/adv_mean": -0.3}, {"iteration": 2, "train/r_mean": 0.5}]
    assert sc.panel_series(rows, sc.NET_PUSH) == [(1, pytest.approx(-0.02)), (2, 0.0)]
    rows = [{"iteration": 1, "train/adv_mean": -0.3}]
    assert sc.panel_series(rows, sc.NET_PUSH) == [(1, -0.3)]
    assert sc.panel_series(rows, "train/adv_mean") == [(1, -0.3)]


def test_windows_table_by_hand(outs, capsys):
    # finished runs only, unless --unfinished: slas-sigma_decay0.9_s0 stopped at 20 of 40
    assert sc.main(["windows", str(outs[0])]) == 0
    text = capsys.readouterr().out
    assert "sigma_decay" not in text
    s0 = text.split("runs/slas_s0")[1]
    assert s0.startswith(" (slas, model L, seed 0, 40 iterations; training reward falls back from iteration 27)")
    # RISE_FALL's 10-iteration means 0.41, 0.61, 0.5, 0.5; SLAS_PUSH's |A| 1 then 3, |r - 1/2| 0.1 then 0.15
    assert "| 1-10 | 0.410 | 1.00 | 0.100 |" in s0 and "| 31-40 | 0.500 | 3.00 | 0.150 |" in s0
    assert sc.main(["windows", str(outs[0]), "--unfinished", "--every", "20"]) == 0
    text = capsys.readouterr().out
    assert "slas-sigma_decay0.9_s0 (slas-sigma_decay0.9, model L, seed 0, 20 iterations" in text
    assert "| 1-20 | 0.510 |" in text.split("runs/slas_s0")[1]
    assert sc.main(["windows", str(outs[0]), "--every", "0"]) == 2


def test_synthetic_net_push_by_estimator():
    res = {x["batch_mean"]: x for x in sc.synthetic(groups=512, seed=0, means=(0.3, 0.85))}
    for x in res.values():  # per-group centring keeps every group's sum at 0
        assert x["grpo"][1] == pytest.approx(0.0, abs=1e-9) and x["slas recenter"][1] == pytest.approx(0.0, abs=1e-9)
    # SLAS's power: mostly-failing groups pull (net > 0), mostly-succeeding ones push away (net < 0)
    assert res[0.3]["slas"][1] > 0.1 and res[0.85]["slas"][1] < -0.3
    assert res[0.85]["zero_spread"] > res[0.3]["zero_spread"]
    assert sc.synthetic(groups=512, seed=0, means=(0.3,)) == [res[0.3]]  # seeded
