"""The reward registry (slas.rewards): a reward of the wrong shape is named, optional packages name the extra to
install, and the toy rewards' prepare hooks derive their metadata from the prompt text."""

import importlib.util

import numpy as np
import pytest

from slas import rewards
from slas.toyworld import parse, render


def test_reward_of_the_wrong_shape_is_named():
    @rewards.register("test_wrong_shape")
    def _wrong():
        return lambda images, prompts, metas: np.zeros(len(images) + 1)

    score = rewards.build({"test_wrong_shape": 1.0})
    with pytest.raises(ValueError, match="test_wrong_shape.*returned shape"):
        score(np.zeros((2, 32, 32, 3), np.uint8), ["a", "b"], [{}, {}])


@pytest.mark.parametrize("name, module, extra", [("hps_openclip", "open_clip", "slas[hps]"),
                                                 ("imagereward", "ImageReward", "slas[imagereward]")])
def test_optional_packages_fail_with_the_extra_to_install(name, module, extra, tmp_path):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed")
    opts = {"model_path": str(tmp_path)} | ({"med_config": str(tmp_path)} if name == "imagereward" else {})
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        rewards.build({name: 1.0}, options={name: opts})


NEED_META = ["toy_score", "toy_correct", "toy_geneval", "toy_biased"]


@pytest.mark.parametrize("name", NEED_META)
def test_toy_rewards_parse_plain_prompt_text(name):
    metas = rewards.prepare_metas([name], ["a photo of three triangles"], [{"prompt": "a photo of three triangles"}])
    assert metas[0]["include"] == [{"class": "triangle", "count": 3}] and metas[0]["tag"] == "counting"
    # the parsed metadata scores like the world's own: a rendered image of the prompt is correct
    img = render(parse("a photo of three triangles"), seed=0)[None]
    score = rewards.build({name: 1.0})
    assert np.isfinite(score(img, ["a photo of three triangles"], metas)[name]).all()


def test_prepare_keeps_valid_metadata_and_record_keys_and_names_bad_words():
    meta = parse("a photo of a red circle") | {"seed": 7}
    assert rewards.prepare_metas(["toy_score"], [meta["prompt"]], [meta]) == [meta]  # a valid include: unchanged
    # a record without include: the grammar's metadata, with the record's own keys on top
    got = rewards.prepare_metas(["toy_score"], ["a photo of two squares"], [{"prompt": "a photo of two squares",
                                                                            "seed": 3}])[0]
    assert got["include"] == [{"class": "square", "count": 2}] and got["seed"] == 3
    with pytest.raises(ValueError, match=r"reward 'toy_score' cannot judge prompt 'a photo of a cat'.*unknown word 'cat'"):
        rewards.prepare_metas(["toy_score"], ["a photo of a cat"], [{"prompt": "a photo of a cat"}])
    # GenEval's own classes are not ShapesWorld's
    with pytest.raises(ValueError, match=r"include\[0\].class must be one of \['circle', 'square', 'triangle'\], got 'person'"):
        rewards.prepare_metas(["toy_geneval"], ["a photo of a person"],
                              [{"prompt": "a photo of a person", "include": [{"class": "person", "count": 1}]}])
    # rewards that read no metadata accept any prompt
    assert rewards.prepare_metas(["toy_clean"], ["a cat"], [{"prompt": "a cat"}]) == [{"prompt": "a cat"}]
