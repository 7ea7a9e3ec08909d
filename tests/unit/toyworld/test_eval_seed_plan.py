"""The evaluation seed (``slas eval --seed``, ``slas toyworld eval --seed``): ``plan``'s seeds, unchanged at 0."""

from __future__ import annotations

import pytest

from slas.toyworld.evaluate import MAX_SEED, SEED_STRIDE, plan

ENTRIES = [{"prompt": "a photo of a circle", "tag": "single_object"},
           {"prompt": "a photo of two squares", "tag": "counting"},
           {"prompt": "a photo of a red triangle", "tag": "colors", "seed": 7}]


def test_seed_zero_is_the_usual_seeds():
    # entry i draws i x 100 + k (an entry's own "seed" replaces i)
    assert plan(ENTRIES, 2)[1] == [0, 1, 100, 101, 700, 701]
    assert plan(ENTRIES, 2, seed=0) == plan(ENTRIES, 2)
    # per tag: 3 images of each tag present, cycling over its one prompt -> k = 0, 1, 2
    assert plan(ENTRIES, images_per_tag=3)[1] == [0, 1, 2, 100, 101, 102, 700, 701, 702]


def test_another_seed_offsets_every_seed_and_keeps_the_prompts():
    metas0, seeds0 = plan(ENTRIES, 2)
    metas, seeds = plan(ENTRIES, 2, seed=3)
    assert metas == metas0 and seeds == [s + 3 * 2**27 for s in seeds0]
    assert SEED_STRIDE == 2**27 and MAX_SEED == 15  # 16 x 2^27 = 2^31 = EVAL_SEED_LIMIT
    assert max(plan(ENTRIES, 2, seed=MAX_SEED)[1]) < 2**31
    # the eval split's entries carry seeds up to 1,234,299: its usual seeds stay below the stride
    from slas.toyworld import split

    assert max(plan(split("eval"), 1)[1]) < SEED_STRIDE <= min(plan(split("eval"), 1, seed=1)[1])


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 1.5, True, "2"])
def test_bad_seeds_say_what_is_allowed(seed):
    with pytest.raises(ValueError, match=r"evaluation seed must be an integer in \[0, 15\]"):
        plan(ENTRIES, 1, seed=seed)


def test_a_seed_other_than_zero_refuses_overlapping_seed_sets():
    many = [{"prompt": "a photo of a circle", "tag": "single_object", "seed": 2_000_000}]  # usual seed 200,000,000
    assert plan(many, 1)[1] == [200_000_000]
    with pytest.raises(ValueError, match=r"usual seed \(entry seed x 100 \+ image\) below 134,217,728"):
        plan(many, 1, seed=1)
