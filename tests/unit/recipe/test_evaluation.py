"""The lines a run prints at its end (slas.recipe.evaluation.change_lines): n, 95% intervals, and "not resolved" below
the minimum n or when the intervals overlap."""

from slas.recipe.evaluation import change_lines


def test_change_lines_resolve_only_large_separated_changes():
    first = {"iteration": 0, "eval/gold_accuracy": 0.317, "eval/n_images": 72,
             "eval/id/gold_accuracy": 0.30, "eval/id/n_images": 300, "eval/exact_count": 0.40}
    final = {"iteration": 4, "eval/gold_accuracy": 0.417, "eval/n_images": 72,
             "eval/id/gold_accuracy": 0.45, "eval/id/n_images": 300, "eval/exact_count": 0.42}
    held, ind, exact = change_lines(first, final)
    assert held == ("held-out strict gold: 31.7% [22.1%, 43.1%] (n=72, iteration 0) -> 41.7% [31.0%, 53.2%] "
                    "(n=72, iteration 4): not resolved (n < 100 images)")
    assert ind.endswith(": +15.0 points (95% intervals disjoint)"), ind
    assert exact.startswith("held-out exact count:") and exact.endswith("not resolved (n < 100 images)")
    no_n = change_lines({"iteration": 0, "eval/gold_accuracy": 0.2}, {"iteration": 4, "eval/gold_accuracy": 0.9})
    assert no_n == ["held-out strict gold: 20.0% (iteration 0) -> 90.0% (iteration 4): n unknown, not resolved"]
    final["eval/id/gold_accuracy"] = 0.35
    assert change_lines(first, final)[1].endswith("not resolved (the 95% intervals overlap)")
