"""What one iteration does, derived from the config (slas.config.totals)."""

from slas.config import derived, load_config


def test_derived_totals():
    d = derived(load_config(None, ["train.objective=ppo_sde", "sample.eta=0.5", "train.prompts_per_iter=4",
                                   "train.group_size=6", "sample.steps=11", "sample.sde_window=[]",
                                   "train.timestep_fraction=0.6", "train.updates_per_iter=3"]))
    assert d["samples_per_iter"] == 24 and d["trained_steps_per_sample"] == 6  # int(10 * 0.6)
    assert d["pairs_per_iter"] == 144 and d["pairs_per_update"] == 48
