"""The committed research/results/slas_scale.csv agrees with docs/slas-at-scale.md: each run's row of the screen
table, and the paired intervals recomputed from the CSV's rows."""

from __future__ import annotations

import re

import pytest

from _scripts import ROOT, load_script

sc = load_script("research/slas_scale.py")

DOC = ROOT / "docs" / "slas-at-scale.md"
LABELS = {"grpo": "grpo", "slas": "slas", "slas-recenterTrue": "slas, `recenter: true`",
          "slas-gamma0.5": "slas, `gamma: 0.5`",
          "slas-recenterTrue-normalizeafterinformative": "slas, `recenter: true`, `normalize: after_informative`"}


def _doc_rows() -> dict[tuple[str, int], list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1].isdigit():
            rows[cells[0], int(cells[1])] = cells
    return rows


def test_every_L_run_of_the_csv_is_the_docs_row():
    table = sc.read_csv(sc.DEFAULT_CSV)
    doc = _doc_rows()
    runs = [x for x in table if x["model"] == "L"]
    assert len(runs) == len(doc) >= 6
    for x in runs:
        cells = doc[LABELS[x["arm"]], x["seed"]]
        assert cells[2] == f"{x['final_heldout']:.1f} ({x['best_heldout']:.1f})", x
        assert cells[3] == f"{x['final_indomain']:.1f}", x
        assert cells[6].startswith("yes" if x["fell_back"] else "no"), x
        assert cells[7] == f"{x['fresh_heldout']:.1f}", x


@pytest.mark.parametrize("column", ["final_heldout", "best_heldout", "final_indomain", "fresh_heldout"])
def test_paired_intervals_recomputed_from_the_csv(column):
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    names = {"final_heldout": "final held-out", "best_heldout": "best held-out", "final_indomain": "final in-domain",
             "fresh_heldout": "held-out on fresh noise"}
    m = re.search(re.escape(names[column]) + r" (−?\d+\.\d) ± (\d+\.\d)", text)
    assert m, f"no paired interval for {column} in {DOC.name}"
    ci = sc.paired(sc.read_csv(sc.DEFAULT_CSV), "slas-recenterTrue", "grpo", "L", column)
    assert f"{ci['mean']:.1f}" == m.group(1).replace("−", "-") and f"{ci['half']:.1f}" == m.group(2)
    lo, hi = ci["ci"]
    assert lo < 0 < hi  # "no interval resolves"
