"""slas.recipe.metrics: the one reader of a run's metrics log, its tail reader, and one metric out of the rows."""

import json
import math

from slas.recipe.metrics import best_value, first_value, last_iteration, last_value, read_metrics, series
from slas.recipe.run_dir import RunDir


def test_series_and_first_last_best_skip_missing_and_non_finite_values():
    rows = [{"iteration": 0, "a": 0.2}, {"iteration": 1, "b": 1.0}, {"iteration": 2, "a": math.nan},
            {"iteration": 3, "a": 0.5}, {"iteration": 4, "a": 0.4}]
    assert series(rows, "a") == [(0, 0.2), (3, 0.5), (4, 0.4)]
    assert (first_value(rows, "a"), last_value(rows, "a"), best_value(rows, "a")) == (0.2, 0.4, 0.5)
    assert series(rows, "c") == [] and all(math.isnan(f(rows, "c")) for f in (first_value, last_value, best_value))


def test_read_metrics_sorts_skips_torn_lines_and_last_iteration_reads_the_end(tmp_path):
    run = RunDir(tmp_path)
    assert read_metrics(tmp_path) == [] and last_iteration(tmp_path) is None  # no log yet
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in ({"iteration": 2, "x": 1}, {"iteration": 1}))
                           + "[1, 2]\n" + '{"iteration": 3, "x": ')  # not a row, then a line cut mid-write
    bad: list[int] = []
    assert read_metrics(tmp_path, bad) == [{"iteration": 1}, {"iteration": 2, "x": 1}] and bad == [3, 4]
    assert last_iteration(tmp_path) == 1  # the last complete row in the file
