"""`slas compare`'s plan (slas.apps.compare.plan): the runs of a sweep, which methods it applies to, its errors."""

import pytest

from slas.apps import compare as cmp
from slas.config import ConfigError


def test_plan_sweeps_only_the_methods_that_accept_the_key(tmp_path):
    specs = cmp.plan(None, ["slas", "grpo"], [0, 1], tmp_path, [("advantage.params.gamma", [0.5, 2])],
                     ["advantage.params.recenter=true"])
    # seed-major: an interrupted comparison has every arm at the same seeds
    assert [s.name for s in specs] == ["slas-gamma0.5_s0", "slas-gamma2_s0", "grpo_s0",
                                       "slas-gamma0.5_s1", "slas-gamma2_s1", "grpo_s1"]
    slas, grpo = specs[0].cfg, specs[-1].cfg
    assert slas.advantage.params == {"recenter": True, "gamma": 0.5}  # the base's params belong to its estimator
    assert grpo.advantage.estimator == "grpo" and grpo.advantage.params == {}
    assert grpo.run.seed == 1 and grpo.run.out_dir == str(tmp_path / "runs" / "grpo_s1")
    assert {s.label for s in specs} == {"slas gamma=0.5", "slas gamma=2", "grpo"}
    # a swept key valid for every method sweeps them all
    assert len(cmp.plan(None, ["slas", "grpo"], [0], tmp_path, [("train.lr", [1e-4, 2e-4])], [])) == 4


@pytest.mark.parametrize("methods, sweep, match", [
    (["ppo"], [], "unknown estimator 'ppo'"),
    (["slas", "slas"], [], "twice"),
    (["slas"], [("advantage.params.gamma", [0.5, -1])], "some values are invalid"),
    (["grpo"], [("advantage.params.gamma", [0.5])], "applies to none of the methods"),
])
def test_plan_errors(tmp_path, methods, sweep, match):
    with pytest.raises(ConfigError, match=match):
        cmp.plan(None, methods, [0], tmp_path, sweep, [])
