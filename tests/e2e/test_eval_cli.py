"""`slas eval` (slas.apps.eval), GenEval detectors (slas.evals.detectors) and the intervals (slas.evals.stats).

Detector (a), the ShapesWorld verifier, is checked against the verifier's own GenEval judge image by image, and the
geneval suite against `slas toyworld eval`. Detector (b), Mask2Former + CLIP, is checked on hand-made model outputs
with known answers and run end to end on tiny random-initialised models built offline.
"""

from __future__ import annotations

import json
import math
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from slas.apps.cli import main
from slas.apps.eval import EvalOptions, Model, format_summary, load_model, run_suite
from slas.evals import detectors, geneval
from slas.evals.detectors import (
    ColorClassifier,
    color_requests,
    crop_object,
    detections_with_colors,
    instance_postprocess,
    mask2bbox,
)
from slas.evals.stats import mean_ci, paired_bootstrap
from slas.policy.generate import generate
from slas.recipe import checkpoint
from slas.toyworld import CANVAS, all_prompts, render, verify
from slas.toyworld import model as toymodel
from slas.toyworld.detector import shapesworld_detections

OBJECT_NAMES_FILE = Path("/work/shared/data/geneval/object_names.txt")


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


# ---------------------------------------------------------------------------
# Detector (a): the ShapesWorld verifier as a GenEval detector
# ---------------------------------------------------------------------------


def test_shapesworld_detector_reproduces_the_verifier_geneval_judge():
    """Clean renders judged against their own and other prompts, plus noisy ones (debris, unknown colours)."""
    rng = random.Random(0)
    metas = all_prompts()
    n_correct = 0
    for i in range(240):
        m = rng.choice(metas)
        shown = m if i % 3 == 0 else rng.choice([x for x in metas if x["tag"] == m["tag"]])
        img = render(shown, i)
        if i % 2:
            noise = np.random.default_rng(i).normal(0, 40, img.shape)
            img = np.clip(img + noise * (np.random.default_rng(i + 1).random(img.shape[:2]) < 0.05)[..., None], 0, 255)
            img = img.astype(np.uint8)
        ours = geneval.evaluate_detections(m, shapesworld_detections(img), (CANVAS, CANVAS))
        assert ours["correct"] == verify(img, m).geneval_correct, (m["prompt"], ours["reason"])
        n_correct += ours["correct"]
    assert 40 < n_correct < 200  # both outcomes exercised


# ---------------------------------------------------------------------------
# Detector (b): Mask2Former post-processing and the colour classifier on hand-made outputs
# ---------------------------------------------------------------------------

H = W = 8
REGIONS = {"A": (slice(2, 5), slice(0, 3)), "B": (slice(2, 5), slice(5, 8)), "C": (slice(6, 8), slice(4, 6))}


def _logits(probs: list[float]) -> list[float]:
    return [math.log(p) for p in probs]


def _hand_made() -> tuple[torch.Tensor, torch.Tensor]:
    """Q=3 queries over classes (cup, dog) + no-object: q0 a cup in A, q1 a cup in B, q2 a dog in C."""
    cls = torch.tensor([_logits([0.97, 0.01, 0.02]), _logits([0.90, 0.04, 0.06]), _logits([0.02, 0.50, 0.48])])
    masks = torch.full((3, H, W), -10.0)
    for q, (region, p) in enumerate([("A", 0.99), ("B", 0.99), ("C", 0.8)]):
        masks[q][REGIONS[region]] = math.log(p / (1 - p))  # sigmoid = p inside the mask
    return cls, masks


def test_mask2bbox_is_tight_with_exclusive_ends():
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    assert mask2bbox(m).tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]  # empty mask: zeros, as mmdet


def test_instance_postprocess_scores_boxes_and_top_k():
    cls, masks = _hand_made()
    inst = instance_postprocess(cls, masks, max_per_image=3)  # top 3 of the 6 (query, class) pairs
    got = sorted(zip(inst.labels.tolist(), inst.scores.tolist(), inst.boxes.tolist(), strict=True), key=lambda t: -t[1])
    assert [g[0] for g in got] == [0, 0, 1]
    assert [round(g[1], 5) for g in got] == [round(0.97 * 0.99, 5), round(0.90 * 0.99, 5), round(0.50 * 0.8, 5)]
    assert [g[2] for g in got] == [[0, 2, 3, 5], [5, 2, 8, 5], [4, 6, 6, 8]]
    assert inst.masks.shape == (3, H, W) and inst.masks.dtype == torch.bool
    assert len(instance_postprocess(cls, masks).labels) == 6  # max_per_image above Q * C: every pair
    with pytest.raises(ValueError, match="mask_logits"):
        instance_postprocess(cls, masks[:2])


class FakeClip:
    """Stands in for ClipFeatures: a text embeds as the one-hot of the colour word it names, an image as the one-hot
    of the palette colour nearest its mean pixel (the #999 background pulls it towards grey, kept small here)."""

    RGB = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 160, 0), "white": (255, 255, 255)}

    def text(self, prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), len(geneval.COLORS))
        for i, p in enumerate(prompts):
            out[i, next(k for k, c in enumerate(geneval.COLORS) if f" {c} " in p or f" {c}-" in p)] = 1.0
        return out

    def image(self, images: np.ndarray) -> torch.Tensor:
        mean = images.reshape(-1, 3).mean(0)
        name = min(self.RGB, key=lambda c: np.linalg.norm(mean - np.array(self.RGB[c])))
        out = torch.zeros(1, len(geneval.COLORS))
        out[0, geneval.COLORS.index(name)] = 1.0
        return out


def test_color_classifier_averages_templates_and_takes_the_argmax():
    clf = ColorClassifier(FakeClip())
    w = clf.weights("cup")
    assert w.shape == (len(geneval.COLORS), len(geneval.COLORS))  # [E, colours]
    assert torch.allclose(w, torch.eye(len(geneval.COLORS)))  # every template names the colour: unit one-hots
    red = np.zeros((3, 3, 3), np.uint8)
    red[..., 0] = 250
    assert clf([red, np.zeros((0, 3, 3), np.uint8)], "cup") == ["red", None]
    assert list(clf._weights) == ["cup"]  # cached per class name, as upstream's COLOR_CLASSIFIERS


def test_crop_pastes_the_object_on_grey_and_crops_its_box():
    img = np.zeros((4, 5, 3), np.uint8)
    img[:] = 7
    mask = np.zeros((4, 5), bool)
    mask[1, 1] = True
    crop = crop_object(img, mask, [1.0, 1.0, 3.0, 3.0])
    assert crop.shape == (2, 2, 3)
    assert crop[0, 0].tolist() == [7, 7, 7] and crop[1, 1].tolist() == list(detectors.MASK_BGCOLOR)
    with pytest.raises(ValueError, match="mask shape"):
        crop_object(img, mask[:3], [0, 0, 1, 1])


def _scene() -> np.ndarray:
    img = np.full((H, W, 3), 153, np.uint8)
    img[REGIONS["A"]] = FakeClip.RGB["red"]
    img[REGIONS["B"]] = FakeClip.RGB["green"]
    img[REGIONS["C"]] = FakeClip.RGB["blue"]
    return img


@pytest.mark.parametrize(
    "meta, correct, reason",
    [
        ({"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}]},
         False, "expected cup>=2, found 1"),  # q1 (0.891) is under the counting threshold 0.9
        ({"tag": "counting", "include": [{"class": "cup", "count": 1}], "exclude": [{"class": "cup", "count": 2}]},
         True, ""),
        ({"tag": "two_object", "include": [{"class": "cup", "count": 2}, {"class": "dog", "count": 1}]}, True, ""),
        ({"tag": "color_attr", "include": [{"class": "cup", "count": 1, "color": "red"},
                                           {"class": "dog", "count": 1, "color": "blue"}]}, True, ""),
        ({"tag": "color_attr", "include": [{"class": "cup", "count": 2, "color": "red"}]}, False,
         "expected red cup>=2, found 1 red; and 1 red, 1 green"),
        ({"tag": "position", "include": [{"class": "cup", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["below", 0]}]}, True, ""),
        ({"tag": "position", "include": [{"class": "cup", "count": 1},
                                         {"class": "dog", "count": 1, "position": ["left of", 0]}]}, False,
         "expected dog left of target, found below and right of target"),
    ],
)
def test_hand_made_outputs_to_geneval_verdicts(meta, correct, reason):
    """Logits -> instances -> detections (thresholds, colours of the objects the rules read) -> GenEval verdict."""
    img = _scene()
    cls, masks = _hand_made()
    meta = dict(meta, prompt="p")
    dets = detections_with_colors(img, instance_postprocess(cls, masks, 3), meta, ["cup", "dog"],
                                  ColorClassifier(FakeClip()))
    assert all(set(d) == {"class", "confidence", "box", "color"} for d in dets)
    colored = {d["class"]: d["color"] for d in dets if d["color"] is not None}
    wants = {r["class"] for r in meta["include"] if "color" in r}
    assert set(colored) == wants
    r = geneval.evaluate_detections(meta, dets, (H, W))
    assert (r["correct"], r["reason"]) == (correct, reason)


def test_color_requests_follow_the_threshold_and_count():
    dets = [{"class": "cup", "confidence": c, "box": [0, 0, 1, 1]} for c in (0.5, 0.95, 0.2, 0.8)]
    dets.append({"class": "dog", "confidence": 0.99, "box": [0, 0, 1, 1]})
    two = {"tag": "colors", "include": [{"class": "cup", "count": 2, "color": "red"}]}
    assert color_requests(dets, two) == [1, 3]  # the two most confident cups; the dog has no colour clause
    assert color_requests(dets, dict(two, include=[dict(two["include"][0], count=4)])) == [0, 1, 3]  # 0.2 < 0.3
    counting = {"tag": "counting", "include": [{"class": "cup", "count": 2, "color": "red"}]}
    assert color_requests(dets, counting) == [1]  # counting threshold 0.9


def test_object_names_and_label_mapping():
    if OBJECT_NAMES_FILE.is_file():
        assert tuple(OBJECT_NAMES_FILE.read_text().splitlines()) == detectors.GENEVAL_OBJECT_NAMES
    assert len(detectors.GENEVAL_OBJECT_NAMES) == 80
    coco = {i: detectors.GENEVAL_OBJECT_NAMES[i] for i in range(80)} | {64: "mouse", 65: "remote", 66: "keyboard"}
    assert detectors._class_names(coco, 80) == detectors.GENEVAL_OBJECT_NAMES
    with pytest.raises(ValueError, match="label 1 is 'car'"):
        detectors._class_names(coco | {1: "car"}, 80)
    assert detectors._class_names({0: "a", 1: "b"}, 2) == ("a", "b")


# ---------------------------------------------------------------------------
# Detector (b) end to end on tiny random models
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
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


def test_mask2former_detector_runs_end_to_end(tiny_detector_dirs):
    m2f, clip = tiny_detector_dirs
    # threshold 0: a random model's scores (~1/81) would keep nothing, and the colour path would not run
    det = detectors.Mask2FormerDetector(m2f, clip, threshold=0.0)
    img = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)  # not the network's size or aspect
    inst = det.instances(img)
    assert inst.masks.shape == (100, 48, 80)  # mmdet's max_per_image of the 6 x 80 (query, class) pairs
    plain = det(img, {"tag": "two_object", "include": [], "prompt": "p"})
    assert len(plain) == 100 and {d["class"] for d in plain} <= set(detectors.GENEVAL_OBJECT_NAMES)
    for d in plain:
        assert set(d) == {"class", "confidence", "box", "color"} and 0.0 <= d["confidence"] <= 1.0
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= 80 and 0 <= y0 <= y1 <= 48
    assert all(d["color"] is None for d in plain)  # no colour clause: CLIP is not asked
    # a colour prompt over the two classes the random model is most confident about
    top = [d["class"] for d in sorted(plain, key=lambda d: -d["confidence"]) if d["confidence"] > 0]
    first, second = top[0], next(c for c in top if c != top[0])
    meta = {"tag": "color_attr", "prompt": "p", "include": [{"class": first, "count": 1, "color": "red"},
                                                            {"class": second, "count": 1, "color": "blue"}]}
    dets = det(img, meta)
    colored = [d for d in dets if d["color"] is not None]
    assert sorted(d["class"] for d in colored) == sorted([first, second])  # the top one of each, nothing else
    assert all(d["color"] in geneval.COLORS for d in colored)
    r = geneval.evaluate_detections(meta, dets, (48, 80), threshold=0.0)
    assert isinstance(r["correct"], bool)


def test_mask2former_scores_an_image_folder_from_the_cli(tiny_detector_dirs, tmp_path, capsys):
    m2f, clip = tiny_detector_dirs
    folder = tmp_path / "imgs" / "00000"
    (folder / "samples").mkdir(parents=True)
    (folder / "metadata.jsonl").write_text(json.dumps({"tag": "single_object", "include": [{"class": "cup", "count": 1}],
                                                       "prompt": "a photo of a cup"}))
    for k in range(2):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / "samples" / f"{k:04d}.png")
    args = ["eval", "--suite", "geneval", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o")]
    rc = main(args)
    assert rc == 2 and "needs --detector-path" in capsys.readouterr().err
    assert main(args + ["--detector-path", str(m2f), "--clip-path", str(clip)]) == 0
    recs = lines(tmp_path / "o" / "results.jsonl")
    assert len(recs) == 2 and [r["sample"] for r in recs] == [0, 1]
    assert set(recs[0]) >= {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    assert isinstance(json.loads(recs[0]["details"]), dict)  # upstream writes details as a JSON string
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["detector"] == "mask2former"


@pytest.fixture(scope="module")
def tiny_sd_pipeline(tmp_path_factory):
    """A stock StableDiffusionPipeline of tiny random components, saved as a local folder."""
    from transformers import CLIPTokenizer

    from _tinypipes import build_pipeline

    words = [f"a photo of a {c} {o}" for c in geneval.COLORS for o in ("cup", "dog", "bench")]
    pipe = build_pipeline("sd", CLIPTokenizer(model_max_length=77).train_new_from_iterator(words * 5, vocab_size=400))
    path = tmp_path_factory.mktemp("pipe") / "sd"
    pipe.save_pretrained(path)
    return path


def test_geneval_on_a_diffusers_pipeline_with_mask2former(tiny_sd_pipeline, tiny_detector_dirs, tmp_path):
    """PIPELINE_DIR -> its slas.policy adapter -> deterministic DDIM -> Mask2Former + CLIP -> GenEval results."""
    m2f, clip = tiny_detector_dirs
    prompts = tmp_path / "meta.jsonl"
    prompts.write_text("".join(json.dumps(m) + "\n" for m in [
        {"tag": "single_object", "include": [{"class": "cup", "count": 1}], "prompt": "a photo of a cup"},
        {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a photo of a red dog"},
    ]))
    args = ["eval", "--suite", "geneval", "--model", str(tiny_sd_pipeline), "--prompts", str(prompts), "--steps", "2",
            "--n-per-prompt", "2", "--device", "cpu", "--detector-path", str(m2f), "--clip-path", str(clip)]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["detector"] == "mask2former" and s["sampler"] == "DDIM, eta 0" and s["n_images"] == 4
    assert "StableDiffusionPipeline" in s["model"]
    recs = lines(tmp_path / "a" / "results.jsonl")
    assert [(r["prompt"], r["sample"]) for r in recs] == [("a photo of a cup", 0), ("a photo of a cup", 1),
                                                          ("a photo of a red dog", 0), ("a photo of a red dog", 1)]
    images = [np.asarray(Image.open(tmp_path / "a" / r["filename"])) for r in recs]
    assert images[0].shape == (64, 64, 3) and not np.array_equal(images[0], images[1])  # two seeds
    assert main(args + ["--out", str(tmp_path / "b"), "--no-images"]) == 0  # deterministic: the same verdicts
    assert [r["details"] for r in lines(tmp_path / "b" / "results.jsonl")] == [r["details"] for r in recs]


# ---------------------------------------------------------------------------
# slas eval on ShapesWorld models
# ---------------------------------------------------------------------------

FEW = ["--max-prompts", "12", "--steps", "6"]


@pytest.fixture(scope="module")
def base_geneval(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "geneval"
    assert main(["eval", "--suite", "geneval", "--model", "base", "--out", str(out)] + FEW) == 0
    return out


def test_geneval_suite_equals_toyworld_eval(base_geneval, tmp_path):
    assert main(["toyworld", "eval", "--json", str(tmp_path / "tw.json")] + FEW) == 0
    tw = json.loads((tmp_path / "tw.json").read_text())
    ge = json.loads((base_geneval / "summary.json").read_text())
    assert ge["n_images"] == tw["n_images"] == 12
    assert ge["overall"] == pytest.approx(tw["overall_geneval"], abs=1e-12)
    assert {t: v["geneval"] for t, v in tw["per_tag"].items()} == pytest.approx(ge["per_tag"], abs=1e-12)
    assert 0 < ge["overall"] < 1  # a non-trivial check
    # image by image: the toyworld suite's geneval_correct is the geneval suite's correct
    assert main(["eval", "--suite", "toyworld", "--model", "base", "--no-images", "--out", str(tmp_path / "t")] + FEW) == 0
    toy = lines(tmp_path / "t" / "results.jsonl")
    gen = lines(base_geneval / "results.jsonl")
    assert [(r["prompt"], r["seed"], r["geneval_correct"]) for r in toy] == [(r["prompt"], r["seed"], r["correct"]) for r in gen]
    assert all(r["filename"] is None for r in toy)
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["overall_strict"] == tw["overall_strict"]


def test_geneval_results_follow_upstream_format_and_rescore_from_images(base_geneval, tmp_path):
    recs = lines(base_geneval / "results.jsonl")
    first = recs[0]
    assert list(first)[:7] == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    meta = json.loads(first["metadata"])
    img = np.asarray(Image.open(base_geneval / first["filename"]))
    assert first["correct"] == verify(img, meta).geneval_correct
    folder_meta = json.loads((base_geneval / "images" / "00000" / "metadata.jsonl").read_text())
    assert folder_meta == meta  # GenEval's generation layout
    assert main(["eval", "--suite", "geneval", "--images", str(base_geneval / "images"), "--detector", "shapesworld",
                 "--out", str(tmp_path / "re")]) == 0
    again = lines(tmp_path / "re" / "results.jsonl")
    assert [(r["metadata"], r["sample"], r["correct"], r["details"]) for r in again] == \
           [(r["metadata"], r["sample"], r["correct"], r["details"]) for r in recs]


@pytest.fixture(scope="module")
def xs_run(tmp_path_factory):
    """A run directory as `slas train` leaves it (config.yaml + checkpoints/iter_*), with an EMA, on an XS model."""
    from slas.config import load_config
    from slas.recipe.builders import build_backbone

    root = tmp_path_factory.mktemp("xsrun")
    torch.manual_seed(0)
    toymodel.save(toymodel.build("XS"), root / "xs")
    run = root / "run"
    cfg = load_config(None, [f"model.checkpoint={root / 'xs'}", f"run.out_dir={run}", "eval.steps=3",
                             "train.ema_decay=0.9"])
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    module = build_backbone(cfg).module
    opt = torch.optim.AdamW(module.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ema = {}
    with torch.no_grad():
        for k, p in module.named_parameters():
            if p.requires_grad:
                ema[k] = p.detach() + 0.05  # what an EMA would hold: something else
        checkpoint.save(run / "checkpoints", 1, module, opt, sched, ema, {})
        for p in module.parameters():
            p.mul_(1.1)  # the "trained" weights of the later checkpoint
        checkpoint.save(run / "checkpoints", 2, module, opt, sched, ema, {})
    return run, {k: v.clone() for k, v in module.state_dict().items()}, ema


def test_run_dir_loads_the_latest_checkpoint_and_its_ema(xs_run, tmp_path):
    run, trained, ema = xs_run
    raw, with_ema = load_model(str(run), ema=False), load_model(str(run))
    assert "iter_000002" in raw.description and "raw" in raw.description and "EMA" in with_ema.description
    assert raw.steps == 3 and raw.shapesworld
    assert all(torch.equal(raw.backbone.module.state_dict()[k], v) for k, v in trained.items())
    assert all(torch.equal(with_ema.backbone.module.state_dict()[k], v) for k, v in ema.items())
    # `slas sample` and `slas toyworld eval` read a run through the same loader: the same weights, named the same
    sample = load_model(str(run), shapesworld_only="sample")
    assert sample.from_run and raw.from_run and sample.description == with_ema.description
    assert all(torch.equal(sample.backbone.module.state_dict()[k], v) for k, v in ema.items())
    assert not load_model(None, shapesworld_only="sample").from_run  # the shipped model: no run to name
    # the CLI samples what the loaded weights generate, with the run's eval.steps and plan()'s seeds
    assert main(["eval", "--suite", "toyworld", "--model", str(run), "--no-ema", "--max-prompts", "3",
                 "--out", str(tmp_path / "o")]) == 0
    recs = lines(tmp_path / "o" / "results.jsonl")
    want = generate(raw.backbone, [r["prompt"] for r in recs], [r["seed"] for r in recs], steps=3)
    got = np.stack([np.asarray(Image.open(tmp_path / "o" / r["filename"])) for r in recs])
    assert np.array_equal(got, want)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["steps"] == 3 and "raw weights" in summary["model"]


def test_reward_suite_reports_mean_and_ci(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a red circle\n# comment\n" + json.dumps({"prompt": "a photo of two squares"}) + "\n")
    out = tmp_path / "r"
    assert main(["eval", "--suite", "reward", "--reward", "toy_score", "--model", "base", "--prompts", str(prompts),
                 "--n-per-prompt", "3", "--steps", "4", "--no-images", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    recs = lines(out / "results.jsonl")
    values = [r["reward"] for r in recs]
    assert len(recs) == 6 and s["n_clusters"] == 2 and s["reward"] == "toy_score"
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["ci95"] == pytest.approx(mean_ci(values, [r["prompt"] for r in recs])["ci95"])
    img_meta = [json.loads(r["metadata"]) for r in recs]
    assert all(m["tag"] in ("colors", "counting") for m in img_meta)  # parsed ShapesWorld metadata reached the reward


def test_compare_two_result_dirs(base_geneval, xs_run, tmp_path, capsys):
    run = xs_run[0]
    b = tmp_path / "b"
    assert main(["eval", "--suite", "geneval", "--model", str(run), "--no-images", "--out", str(b)] + FEW) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(base_geneval), str(b), "--n-boot", "500", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "95% CI" in out
    cmp = json.loads((tmp_path / "c" / "compare.json").read_text())
    a_s, b_s = (json.loads((d / "summary.json").read_text()) for d in (base_geneval, b))
    r = cmp["metrics"]["correct"]
    assert r["a"] == pytest.approx(a_s["overall"]) and r["b"] == pytest.approx(b_s["overall"])
    assert r["ci95"][0] <= r["diff"] <= r["ci95"][1]
    # not paired: other prompts
    c = tmp_path / "other"
    assert main(["eval", "--suite", "geneval", "--model", str(run), "--no-images", "--out", str(c),
                 "--max-prompts", "6", "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(base_geneval), str(c)]) == 2
    err = capsys.readouterr().err
    assert "not paired" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------
# Errors: one line, exit status 2
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "--suite", "geneval", "--model", "base"], "--out"),
        (["eval", "--suite", "reward", "--model", "base", "--out", "{tmp}/o"], "needs --reward NAME"),
        (["eval", "--suite", "reward", "--reward", "nope", "--model", "base", "--out", "{tmp}/o"], "unknown reward"),
        (["eval", "--suite", "geneval", "--model", "{tmp}/missing", "--out", "{tmp}/o"], "not a directory"),
        (["eval", "--suite", "geneval", "--model", "{tmp}/pipe", "--out", "{tmp}/o"],
         "PixArtAlphaPipeline pipelines are not supported by `slas eval` yet"),
        (["eval", "--suite", "geneval", "--model", "{tmp}/emptyrun", "--out", "{tmp}/o"], "no checkpoint"),
        (["eval", "--suite", "unigenbench", "--model", "base", "--out", "{tmp}/o"], "no judge configured"),
        (["eval", "--suite", "toyworld", "--images", "{tmp}", "--out", "{tmp}/o"], "--images"),
        (["eval", "--suite", "geneval", "--model", "base", "--detector", "mask2former", "--out", "{tmp}/o"],
         "COCO detector"),
        (["eval", "--suite", "geneval", "--model", "base", "--max-prompts", "-1", "--out", "{tmp}/o"],
         "--max-prompts must be >= 0"),
        (["eval", "--suite", "geneval", "--model", "base", "--prompts", "{tmp}/bad.txt", "--out", "{tmp}/o"], "'dog'"),
        (["eval", "--compare", "{tmp}", "{tmp}"], "not a `slas eval` output directory"),
    ],
)
def test_errors_are_one_line(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SLAS_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("SLAS_JUDGE_MODEL", raising=False)
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    (tmp_path / "emptyrun").mkdir()
    (tmp_path / "emptyrun" / "config.yaml").write_text("run:\n  seed: 0\n")
    (tmp_path / "bad.txt").write_text("a photo of a dog\n")
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_unigenbench_needs_natural_language_models(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SLAS_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SLAS_JUDGE_MODEL", "judge")
    assert main(["eval", "--suite", "unigenbench", "--model", "base", "--out", str(tmp_path / "o")]) == 2
    assert "reads only its own grammar" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# UniGenBench wiring: a stand-in backbone and a stub judge
# ---------------------------------------------------------------------------


class FlatBackbone:
    """A Backbone whose velocity is 0: every sample is its initial noise, decoded to uint8 (16 x 16)."""

    prediction = "velocity"
    sample_shape = (3, 16, 16)
    module = torch.nn.Identity()
    device = torch.device("cpu")

    def encode_prompts(self, prompts):
        return {"e": torch.zeros(len(prompts), 1)}

    def predict(self, x, sigma, cond):
        return torch.zeros_like(x)

    def decode(self, x0):
        return ((x0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def trainable_parameters(self):
        return []


def test_unigenbench_suite_samples_judges_and_writes(monkeypatch, tmp_path):
    from slas.evals import unigenbench as ugb

    data = tmp_path / "ugb"
    data.mkdir()
    (data / ugb.DEFINITIONS_FILE).write_text(json.dumps({
        "testpoint_explanations_en": {"Style": "s", "World Knowledge": "w"},
        "judge_system_prompt_template_en": "{prompt} {testpoint} {explanation} {test_explanation}"}))
    rows = [[i, f"prompt {i}", json.dumps({"Testpoints": ["Style", "World Knowledge"],
                                           "Testpoint Description": ["a", "b"]})] for i in range(3)]
    import csv

    with (data / ugb.DATA_FILES["short"]).open("w", newline="") as f:
        csv.writer(f).writerows([["index", "prompt_en", "sub_dims_en"], *rows])

    answer = "<analysis>['x', 'y']</analysis><score>[1, 0]</score>"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SLAS_JUDGE_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv("SLAS_JUDGE_MODEL", "stub")
        opts = EvalOptions(suite="unigenbench", out=tmp_path / "o", data_dir=str(data), max_prompts=2, steps=2)
        s = run_suite(opts, model=Model(FlatBackbone(), "flat", False, 2))
    finally:
        server.shutdown()
    assert s["overall"] == pytest.approx(0.5) and s["n_images"] == 8 and s["n_malformed"] == s["n_failed"] == 0
    assert "overall" in format_summary(s)
    recs = lines(tmp_path / "o" / "results.jsonl")
    assert [(r["index"], r["sample"]) for r in recs] == [(i, k) for i in range(2) for k in range(4)]
    assert all(r["scores"] == [1, 0] and r["status"] == "ok" for r in recs)
    assert (tmp_path / "o" / "judge_cache.jsonl").is_file() and (tmp_path / "o" / recs[0]["filename"]).is_file()


# ---------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------


def test_mean_ci_is_the_usual_interval_and_cluster_robust():
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    r = mean_ci(y)
    se = y.std(ddof=1) / math.sqrt(40)
    assert r["se"] == pytest.approx(se) and r["ci95"] == pytest.approx([y.mean() - 1.959964 * se, y.mean() + 1.959964 * se])
    clusters = np.repeat(np.arange(10), 4)  # 10 prompts x 4 images: SE of the mean = sd(prompt means) / sqrt(10)
    means = y.reshape(10, 4).mean(1)
    assert mean_ci(y, clusters)["se"] == pytest.approx(means.std(ddof=1) / math.sqrt(10))
    assert math.isnan(mean_ci([1.0, 2.0], ["p", "p"])["se"])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan")])


def test_paired_bootstrap_known_cases():
    a, b = [0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 1, 0]
    same = paired_bootstrap(a, b, clusters=range(6), n_boot=200)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0]  # paired: identical results have no spread
    up = paired_bootstrap([0] * 6, [1] * 6, clusters=range(6), n_boot=200)
    assert up["diff"] == 1 and up["ci95"] == [1.0, 1.0]
    # two strata weigh equally whatever their sizes: (1/4 + 1) / 2
    r = paired_bootstrap([0, 0, 0, 0, 0], [1, 0, 0, 0, 1], clusters=range(5), strata=["x", "x", "x", "x", "y"],
                         n_boot=2000, seed=1)
    assert r["diff"] == pytest.approx(0.625) and r["per_stratum"]["x"]["diff"] == pytest.approx(0.25)
    # y is fixed at 1; x's replicate is k/4 with k ~ Binomial(4, 1/4) draws of its one success: P(k = 0) = 32% and
    # P(k >= 3) = 5.1% > 2.5% > P(k = 4) = 0.4%, so the interval is [(0 + 1) / 2, (3/4 + 1) / 2]
    assert r["ci95"] == pytest.approx([0.5, 0.875])
    assert r == paired_bootstrap([0, 0, 0, 0, 0], [1, 0, 0, 0, 1], clusters=range(5),
                                 strata=["x", "x", "x", "x", "y"], n_boot=2000, seed=1)  # seeded: reproducible
    # images of one prompt move together: one prompt with two images is one draw
    c = paired_bootstrap([0, 0, 0], [1, 1, 0], clusters=["p", "p", "q"], n_boot=2000)
    assert c["diff"] == pytest.approx(2 / 3) and c["ci95"] == pytest.approx([0.0, 1.0])
