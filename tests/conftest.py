"""Fixtures shared across the test directories: a random-init XS ShapesWorld model, a 1-iteration run of it with
labelled grids, the prompt files of the tiny real backbones, and tiny random GenEval detector models.

The suite runs one thread per process, whatever the environment says: before torch loads, OMP_NUM_THREADS and
MKL_NUM_THREADS are set to 1 for this process and for every subprocess a test starts (`slas train`, torchrun, the
reward server), and torch's own pool is pinned to 1 thread. With another job on the cores, torch's default of one
thread per core makes each process wait for the busiest core at every parallel region (on 2 cores beside one other
job the suite crawled: about 69 of 714 tests in 21 minutes, against 5.4 minutes for all of them on one thread), and
the tests' models are too small to gain from a second thread.
"""

import json
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# the shared helpers (_toyruns.py, _tinypipes.py, _fakeruns.py, _fuzz.py) live beside this file; the tests live in unit/,
# integration/ and e2e/
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tinypipes import PROMPTS  # noqa: E402
from _toyruns import GRID_PROMPTS, tiny_overrides  # noqa: E402
from slas.config import load_config  # noqa: E402
from slas.recipe.train import train  # noqa: E402
from slas.toyworld import model as toymodel  # noqa: E402

# The suite trains beside itself and other jobs: the busy-cores warning of slas.recipe.threads would add a line to
# outputs that tests compare exactly. tests/unit/recipe/test_threads.py and the e2e test of it turn it back on.
os.environ.setdefault("SLAS_LOAD_CHECKED", "1")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-init XS ShapesWorld model: fast, and enough to exercise every code path."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "xs"
    toymodel.save(toymodel.build("XS"), path)
    return path


@pytest.fixture(scope="session")
def labelled_run(tiny_ckpt, tmp_path_factory):
    """A 1-iteration run of the XS model (evaluations at iterations 0 and 1) and the lines it logged."""
    out = tmp_path_factory.mktemp("unc") / "run"
    ov = tiny_overrides(tiny_ckpt, out, **{"train.iterations": 1, "eval.grid_prompts": f"[{', '.join(GRID_PROMPTS)}]"})
    logged: list[str] = []
    train(load_config(None, ov), progress=False, log=logged.append)
    return out, logged


@pytest.fixture(scope="session")
def prompt_files(tmp_path_factory):
    """The tiny backbones' prompts as upstream ships them: train.txt (CRLF, a blank line) and eval.jsonl."""
    d = tmp_path_factory.mktemp("prompts")
    (d / "train.txt").write_text("\r\n".join(PROMPTS) + "\r\n\r\n")  # CRLF and a blank line, as upstream files
    (d / "eval.jsonl").write_text("".join(json.dumps({"prompt": p, "tag": "t"}) + "\n" for p in PROMPTS[:2]))
    return d


@pytest.fixture(scope="session")
def tiny_detector_dirs(tmp_path_factory):
    """A random Mask2Former (Swin, 80 COCO labels, 6 queries) and a random CLIP (64 px) saved offline."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTokenizer,
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        SwinConfig,
    )
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    from slas.evals import geneval

    root = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    m2f = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
        backbone_config=swin, num_labels=80, hidden_dim=32, num_queries=6, encoder_layers=1, decoder_layers=2,
        feature_size=32, mask_feature_size=32, encoder_feedforward_dim=32, dim_feedforward=32, num_attention_heads=2))
    m2f.save_pretrained(root / "m2f")
    Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(root / "m2f")
    corpus = [f"a photo of a {c} {o}" for c in geneval.COLORS for o in ("cup", "dog", "object")]
    tok = CLIPTokenizer(model_max_length=77).train_new_from_iterator(corpus * 5, vocab_size=400)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, projection_dim=32, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(root / "clip")
    return root / "m2f", root / "clip"
