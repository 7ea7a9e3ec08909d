"""Detectors for GenEval: images in, detections out (the input of ``slas.evals.geneval.evaluate_detections``).

A detector is any callable ``detector(image, metadata) -> list[dict]`` with a ``name``, where ``image`` is uint8
``[H, W, 3]`` and each detection is ``{"class": str, "confidence": float in [0, 1], "box": [x0, y0, x1, y1] (pixels),
"color": one of geneval.COLORS or None}``. It receives the metadata because upstream classifies colours only for the
objects its rules read (the ``count`` most confident of a class that a colour clause names), and CLIP on every box
would cost more and change nothing.

Worlds bring their own (ShapesWorld: ``slas.toyworld.detector.ShapesWorldDetector``, the verifier's connected
components). Here:

- ``Mask2FormerDetector``: GenEval's detector stack without mmdet. A local ``transformers``
  ``Mask2FormerForUniversalSegmentation`` (e.g. ``facebook/mask2former-swin-small-coco-instance``: the Swin-S COCO
  instance model, as upstream's mmdet ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``, but not the same weights)
  gives instances through mmdet's own instance post-processing (``instance_postprocess`` below), and a local
  ``CLIPModel`` (upstream: OpenAI ViT-L-14 through open_clip) classifies colours zero-shot as upstream's
  ``color_classification``.

Upstream, read at these commits:

- ``djghosh13/geneval`` ``evaluation/evaluate_images.py`` @ ``16f1681160a110fd077309eb04c1e004f951e06d``:
  ``ImageCrops`` (object pasted on a ``#999`` background through its mask, then cropped to its box),
  ``color_classification`` (three prompt templates per colour, classifier cached per class name), the class names
  (``object_names.txt``, indexed by mmdet's label);
- ``open-mmlab/mmdetection`` ``mmdet/models/seg_heads/panoptic_fusion_heads/maskformer_fusion_head.py`` @
  ``0c5159285b4d69e75679c2e34a08415fe2bec8d8`` ``MaskFormerFusionHead.instance_postprocess`` (unchanged from the
  2.x branch GenEval pins, mmdet 2.27.0) and ``mask2bbox`` (``mmdet/core/mask/utils.py``);
- ``LAION-AI/CLIP_benchmark`` ``clip_benchmark/metrics/zeroshot_classification.py``: ``zero_shot_classifier`` (mean of
  the L2-normalised template embeddings, renormalised) and ``run_classification`` (argmax of image · classifier).

Deviations from upstream (the decision rules are ``geneval.py``'s and unchanged):

- The detector weights: any local checkpoint; upstream's is mmdet's own Swin-S training, which ``transformers`` cannot
  load. Scores are therefore close to upstream's, not identical, and should be compared only with scores from the
  same checkpoints.
- Preprocessing is the Mask2Former checkpoint's ``transformers`` image processor (its own resize; HF rounds the
  resized size up to a multiple of 32 instead of padding), not mmdet's ``Resize(1333, 800)`` + ``Pad(32)``; the mask
  logits are then brought back exactly as mmdet does (bilinear to the network input, crop the padding, bilinear to
  the original size). Boxes and scores therefore differ slightly from upstream's for the same weights.
- CLIP runs through ``transformers.CLIPModel`` with ``slas.rewards.clip.ClipPreprocess`` (PIL-equivalent bicubic
  resize, centre crop rounded as torchvision's ``CenterCrop``), not open_clip + torchvision: within 2 of 255 levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from slas.evals.geneval import COLORS, COUNTING_THRESHOLD, MAX_OBJECTS, NMS_THRESHOLD, THRESHOLD, select_detections

__all__ = [
    "COLOR_TEMPLATES",
    "COCO_ALIASES",
    "GENEVAL_OBJECT_NAMES",
    "MASK_BGCOLOR",
    "MAX_PER_IMAGE",
    "ColorClassifier",
    "Detector",
    "Instances",
    "Mask2FormerDetector",
    "color_requests",
    "crop_object",
    "detections_with_colors",
    "instance_postprocess",
    "instances_to_detections",
    "mask2bbox",
]

# evaluation/object_names.txt (same blob as prompts/object_names.txt): upstream names mmdet's label i by line i.
GENEVAL_OBJECT_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
# COCO names (detectron2 / HF checkpoints' id2label) that GenEval spells differently.
COCO_ALIASES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}
# color_classification: the zero-shot templates of every colour, for the object's class name.
COLOR_TEMPLATES: tuple[str, ...] = ("a photo of a {c} {classname}", "a photo of a {c}-colored {classname}",
                                    "a photo of a {c} object")
MASK_BGCOLOR = (153, 153, 153)  # ImageCrops: options 'bgcolor' default "#999"
MAX_PER_IMAGE = 100  # mmdet test_cfg max_per_image of upstream's Mask2Former config


class Detector(Protocol):
    name: str

    def __call__(self, image: np.ndarray, metadata: dict) -> list[dict]:
        """uint8 [H, W, 3] + GenEval metadata -> detections (module docstring)."""
        ...


# ----------------------------------------------------------------------------
# (b) Mask2Former + CLIP: pure conversion steps
# ----------------------------------------------------------------------------


@dataclass
class Instances:
    """One image's instances, in mmdet's order: ``labels [K]`` int64, ``boxes [K, 4]`` float32 (x0, y0, x1, y1, end
    exclusive), ``scores [K]`` float32 in [0, 1], ``masks [K, H, W]`` bool."""

    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor


def mask2bbox(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of bool masks [K, H, W] -> float32 [K, 4] ``[x0, y0, x1 + 1, y1 + 1]``; an empty mask gives zeros
    (mmdet ``mask2bbox``)."""
    K = masks.shape[0]
    boxes = torch.zeros(K, 4, dtype=torch.float32)
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [K, W], [K, H]
    for k in range(K):
        x, y = torch.where(cols[k])[0], torch.where(rows[k])[0]
        if len(x) and len(y):
            boxes[k] = torch.tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
    return boxes


def instance_postprocess(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                         max_per_image: int = MAX_PER_IMAGE) -> Instances:
    """mmdet ``MaskFormerFusionHead.instance_postprocess`` (every class a thing class, as in COCO instance models).

    Args:
        class_logits: [Q, C + 1] per-query class logits; the last column is "no object".
        mask_logits: [Q, H, W] per-query mask logits at the original image size.
        max_per_image: keep the top ``max_per_image`` (query, class) pairs by class probability (at most Q * C).

    Each kept pair is an instance with mask ``mask_logit > 0``, box ``mask2bbox(mask)`` and score
    ``p(class) * mean(sigmoid(mask_logit) over the mask)``: a query can appear once per class.
    """
    Q, C1 = class_logits.shape
    if mask_logits.ndim != 3 or mask_logits.shape[0] != Q:
        raise ValueError(f"mask_logits must be [Q={Q}, H, W], got {list(mask_logits.shape)}")
    C = C1 - 1
    probs = F.softmax(class_logits.float(), dim=-1)[:, :-1]  # [Q, C]
    k = min(max_per_image, Q * C)
    top_scores, top = probs.flatten().topk(k, sorted=False)  # mmdet: sorted=False
    labels, queries = top % C, top // C
    logits = mask_logits[queries].float()  # [k, H, W]
    binary = (logits > 0).float()
    mask_scores = (logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    masks = binary.bool()
    return Instances(labels=labels, boxes=mask2bbox(masks), scores=(top_scores * mask_scores).clamp(0.0, 1.0),
                     masks=masks)


def instances_to_detections(instances: Instances, class_names: Sequence[str]) -> list[dict]:
    """Instances -> GenEval detections (colour ``None`` until classified); ``detections[i]`` is ``instances[i]``."""
    n = len(class_names)
    dets = []
    for label, box, score in zip(instances.labels.tolist(), instances.boxes.tolist(), instances.scores.tolist(),
                                 strict=True):
        if not 0 <= label < n:
            raise ValueError(f"label {label} has no class name ({n} names)")
        dets.append({"class": class_names[label], "confidence": float(score), "box": [float(v) for v in box],
                     "color": None})
    return dets


def color_requests(detections: list[dict], metadata: dict, *, threshold: float = THRESHOLD,
                   counting_threshold: float = COUNTING_THRESHOLD, max_objects: int = MAX_OBJECTS,
                   nms_threshold: float = NMS_THRESHOLD) -> list[int]:
    """Indices of the detections whose colour GenEval's rules read, in ascending order.

    Those are, for every ``include`` clause with a ``color``, the ``count`` most confident kept detections of its
    class (kept by ``select_detections`` with the tag's threshold, as ``evaluate_detections`` keeps them). Upstream
    classifies exactly these (``evaluate``: ``color_classification(image, found_objects, classname)``); the options
    must be those given to ``evaluate_detections``.
    """
    conf = threshold if metadata.get("tag") != "counting" else counting_threshold
    kept = select_detections(detections, conf, max_objects, nms_threshold)
    position = {id(d): i for i, d in enumerate(detections)}
    wanted: set[int] = set()
    for req in metadata.get("include", []):
        if "color" in req:
            wanted.update(position[id(d)] for d in kept.get(req["class"], [])[: req["count"]])
    return sorted(wanted)


def crop_object(image: np.ndarray, mask: np.ndarray | None, box: Sequence[float],
                bgcolor: tuple[int, int, int] = MASK_BGCOLOR) -> np.ndarray:
    """``ImageCrops.__getitem__``: the object pasted through its mask on a ``bgcolor`` canvas, cropped to ``box``.

    ``PIL.Image.crop`` rounds the box to integers; a box outside the image is clipped to it here (PIL would pad).
    Returns uint8 [h, w, 3], possibly empty.
    """
    H, W = image.shape[:2]
    if mask is not None:
        if mask.shape != (H, W):
            raise ValueError(f"mask shape {list(mask.shape)} is not the image's (H, W) = ({H}, {W})")
        image = np.where(mask[..., None], image, np.array(bgcolor, dtype=np.uint8))
    x0, y0, x1, y1 = (int(round(v)) for v in box[:4])
    return np.ascontiguousarray(image[max(y0, 0) : min(y1, H), max(x0, 0) : min(x1, W)])


def detections_with_colors(image: np.ndarray, instances: Instances, metadata: dict, class_names: Sequence[str],
                           classify: Callable[[list[np.ndarray], str], list[str | None]], *,
                           threshold: float = THRESHOLD, counting_threshold: float = COUNTING_THRESHOLD,
                           max_objects: int = MAX_OBJECTS, nms_threshold: float = NMS_THRESHOLD) -> list[dict]:
    """Instances -> detections, with the colour of every object the rules read (``color_requests``) from
    ``classify(crops, classname)`` on its ``crop_object`` crop; every other colour stays ``None``."""
    dets = instances_to_detections(instances, class_names)
    by_class: dict[str, list[int]] = {}
    for i in color_requests(dets, metadata, threshold=threshold, counting_threshold=counting_threshold,
                            max_objects=max_objects, nms_threshold=nms_threshold):
        by_class.setdefault(dets[i]["class"], []).append(i)
    for classname, idx in by_class.items():
        crops = [crop_object(image, instances.masks[i].numpy(), dets[i]["box"]) for i in idx]
        for i, color in zip(idx, classify(crops, classname), strict=True):
            dets[i]["color"] = color
    return dets


class ColorClassifier:
    """Zero-shot colour of object crops with a CLIP model (upstream ``color_classification``)."""

    def __init__(self, clip, colors: Sequence[str] = COLORS, templates: Sequence[str] = COLOR_TEMPLATES):
        self.clip = clip  # slas.rewards.clip.ClipFeatures
        self.colors, self.templates = tuple(colors), tuple(templates)
        self._weights: dict[str, torch.Tensor] = {}  # class name -> [E, n_colors]; upstream COLOR_CLASSIFIERS

    def weights(self, classname: str) -> torch.Tensor:
        """clip_benchmark ``zero_shot_classifier``: per colour, mean of the unit template embeddings, renormalised."""
        if classname not in self._weights:
            cols = []
            for c in self.colors:
                emb = self.clip.text([t.format(c=c, classname=classname) for t in self.templates])  # [T, E], unit
                cols.append(F.normalize(emb.mean(0), dim=-1))
            self._weights[classname] = torch.stack(cols, dim=1)
        return self._weights[classname]

    @torch.no_grad()
    def __call__(self, crops: Sequence[np.ndarray], classname: str) -> list[str | None]:
        """The colour of each uint8 [h, w, 3] crop of a ``classname``; ``None`` for an empty crop."""
        out: list[str | None] = []
        w = self.weights(classname)
        for crop in crops:
            if crop.size == 0:
                out.append(None)
                continue
            feats = self.clip.image(crop[None])  # [1, E], unit norm; crops differ in size: one at a time
            out.append(self.colors[int((feats @ w).argmax())])
        return out


# ----------------------------------------------------------------------------
# (b) Mask2Former + CLIP: the detector
# ----------------------------------------------------------------------------


def _class_names(id2label: dict, num_labels: int) -> tuple[str, ...]:
    """GenEval's names for an 80-class COCO model (upstream indexes ``object_names.txt`` by label); the checkpoint's
    own ``id2label`` otherwise. A COCO model whose labels are named must name them in COCO's order."""
    names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(num_labels)]
    if num_labels != len(GENEVAL_OBJECT_NAMES):
        return tuple(names)
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):  # unnamed (a random test model): COCO order assumed
        return GENEVAL_OBJECT_NAMES
    for i, (n, g) in enumerate(zip(names, GENEVAL_OBJECT_NAMES, strict=True)):
        if COCO_ALIASES.get(n, n).replace("-", " ").lower() != g:
            raise ValueError(f"the Mask2Former checkpoint's label {i} is {n!r}, but GenEval's class {i} is {g!r}: "
                             "not a COCO-ordered instance model; pass class_names explicitly")
    return GENEVAL_OBJECT_NAMES


def _load_clip(clip_path: str | Path, device: torch.device):
    from slas.rewards.clip import ClipFeatures, ClipPreprocess

    p = Path(clip_path).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"no CLIPModel at {p} (expected config.json); GenEval's colour classifier is CLIP "
                                "ViT-L-14 (openai/clip-vit-large-patch14), loaded from a local directory only")
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(p, local_files_only=True)
    pre = ClipPreprocess.from_pretrained(p, model.config.vision_config.image_size)
    # open_clip's eval transform centre-crops with torchvision's CenterCrop (rounded offsets)
    pre = dataclasses.replace(pre, crop_rounding="round")
    return ClipFeatures(model, AutoTokenizer.from_pretrained(p, local_files_only=True), pre, device, torch.float32)


class Mask2FormerDetector:
    """Detector (b): a local Mask2Former instance-segmentation model and a local CLIP colour classifier.

    Args:
        model_path: directory of a ``Mask2FormerForUniversalSegmentation`` checkpoint with its
            ``preprocessor_config.json`` (e.g. a download of ``facebook/mask2former-swin-small-coco-instance``).
        clip_path: directory of a ``CLIPModel`` with its tokenizer (upstream: ``openai/clip-vit-large-patch14``).
        class_names: the name of each label; default GenEval's ``object_names.txt`` for 80-label COCO models, else the
            checkpoint's ``id2label``.
        threshold, counting_threshold, max_objects, nms_threshold: must equal those given to ``evaluate_detections``
            (they decide which objects get a colour; ``color_requests``).
    """

    name = "mask2former"

    def __init__(self, model_path: str | Path, clip_path: str | Path, *, device: str = "auto",
                 class_names: Sequence[str] | None = None, max_per_image: int = MAX_PER_IMAGE,
                 threshold: float = THRESHOLD, counting_threshold: float = COUNTING_THRESHOLD,
                 max_objects: int = MAX_OBJECTS, nms_threshold: float = NMS_THRESHOLD):
        mp = Path(model_path).expanduser()
        if not (mp / "config.json").is_file() or not (mp / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"no Mask2Former checkpoint at {mp} (expected config.json and "
                                    "preprocessor_config.json); models load from local directories only")
        try:
            self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        except RuntimeError:
            raise ValueError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda:0')") from None
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        self.processor = AutoImageProcessor.from_pretrained(mp, local_files_only=True)
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(mp, local_files_only=True)
        self.model = self.model.to(self.device).eval().requires_grad_(False)
        n = self.model.config.num_labels
        self.class_names = tuple(class_names) if class_names is not None else _class_names(self.model.config.id2label, n)
        if len(self.class_names) != n:
            raise ValueError(f"{len(self.class_names)} class names for a model with {n} labels")
        self.max_per_image = max_per_image
        self.rules = dict(threshold=threshold, counting_threshold=counting_threshold, max_objects=max_objects,
                          nms_threshold=nms_threshold)
        self.colors = ColorClassifier(_load_clip(clip_path, self.device))

    @torch.no_grad()
    def instances(self, image: np.ndarray) -> Instances:
        """Run Mask2Former on uint8 [H, W, 3]; masks come back at H x W as mmdet brings them back."""
        H, W = image.shape[:2]
        inputs = self.processor(images=[image], return_tensors="pt")
        px = inputs["pixel_values"].to(self.device)
        pixel_mask = inputs["pixel_mask"].to(self.device) if "pixel_mask" in inputs else None
        out = self.model(pixel_values=px, pixel_mask=pixel_mask)
        logits = F.interpolate(out.masks_queries_logits, size=px.shape[-2:], mode="bilinear", align_corners=False)
        if "pixel_mask" in inputs:  # drop the padding (mmdet: crop to img_shape), then back to the original size
            valid = inputs["pixel_mask"][0].bool()
            h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
            logits = logits[..., :h, :w]
        logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        return instance_postprocess(out.class_queries_logits[0].cpu(), logits[0].cpu(), self.max_per_image)

    def __call__(self, image: np.ndarray, metadata: dict) -> list[dict]:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("image must be a uint8 array [H, W, 3]")
        return detections_with_colors(image, self.instances(image), metadata, self.class_names, self.colors,
                                      **self.rules)
