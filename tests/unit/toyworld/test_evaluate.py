"""ShapesWorld evaluation output (slas.toyworld.evaluate): the table with n and Wilson intervals per tag, and the grid
labelled with each image's prompt and strict verdict."""

import numpy as np
import pytest

from slas.apps.eval import format_summary
from slas.toyworld import parse, render, verify
from slas.toyworld.evaluate import FAIL_COLOUR, PASS_COLOUR, format_table, labelled_grid


def test_toyworld_table_shows_n_and_wilson_per_tag_and_overall():
    summary = {"per_tag": {"counting": {"strict": 0.0, "geneval": 0.25, "exact_count": 0.5, "n": 4},
                           "colors": {"strict": 0.5, "geneval": 0.5, "exact_count": 0.5, "n": 10}},
               "overall_strict": 0.25, "overall_geneval": 0.375, "exact_count": 0.5, "n_images": 14}
    table = format_table(summary).splitlines()
    assert "95% CI" in table[0] and table[0].rstrip().endswith("n")
    assert "[0.0%, 49.0%]" in table[1] and table[1].rstrip().endswith(" 4")
    assert "[23.7%, 76.3%]" in table[2]
    assert table[3].startswith("overall") and "[9.6%, 51.2%]" in table[3] and table[3].rstrip().endswith("14")
    geneval = format_summary({"suite": "geneval", "per_tag": {"position": 0.0}, "per_tag_counts": {"position": [0, 4]},
                              "overall": 0.0, "n_images": 4, "image_accuracy": 0.0, "prompt_accuracy": 0.0,
                              "detector": "x"}).splitlines()
    assert "[0.0%, 49.0%]" in geneval[1] and "[0.0%, 49.0%]" in geneval[2]  # `slas eval --suite geneval` too


def test_labelled_grid_marks_pass_and_fail():
    metas = [parse("a photo of a red circle"), parse("a photo of two squares")]
    images = np.stack([render(metas[0], 0), np.full_like(render(metas[1], 0), 128)])  # the second: an empty canvas
    results = [verify(im, m) for im, m in zip(images, metas, strict=True)]
    assert [r.correct for r in results] == [True, False]
    g = labelled_grid(images, metas, results, ncol=2, scale=3, pad=6)
    cell_w = 32 * 3 + 6
    assert tuple(g[5, 5]) == PASS_COLOUR and tuple(g[5, 5 + cell_w]) == FAIL_COLOUR  # the frames
    below = g[6 + 96 + 2 : 6 + 96 + 26]  # the two prompt lines under the images
    assert (below[:, 6 : 6 + 96] < 80).any() and (below[:, 6 + cell_w : 6 + cell_w + 96] < 80).any()
    assert g.shape[0] > 6 + 96 + 30  # room for the labels; policy.generate.grid has none
    with pytest.raises(ValueError):
        labelled_grid(images, metas[:1], results)
