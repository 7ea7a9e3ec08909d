"""What the commands print (slas.apps.commands): extending a run whose LR schedule is cosine."""

from slas.apps.commands import _extend
from slas.config import load_config


def test_extending_a_cosine_schedule_says_how_its_remainder_changes(tmp_path, capsys):
    before = load_config(None, ["train.lr_schedule=cosine", "train.iterations=10", "train.lr=1e-4"])
    _extend(tmp_path, before, load_config(None, ["train.lr_schedule=cosine", "train.iterations=20", "train.lr=1e-4"]))
    out = capsys.readouterr().out
    assert "its cosine LR schedule now spans 20 iterations, so the remaining updates follow that schedule" in out
    assert "the result differs from a run of 20 iterations from the start" in out
