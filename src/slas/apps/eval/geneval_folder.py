"""GenEval's image folder layout: ``NNNNN/metadata.jsonl`` (one prompt's metadata) + ``NNNNN/samples/NNNN.png``, as
upstream's ``generation/diffusers_generate.py`` writes it and ``evaluation/evaluate_images.py`` reads it. ``slas eval``
writes its samples this way and scores such a folder with ``--images``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from slas.apps.eval.options import IMAGES_DIR, EvalError
from slas.apps.eval.sampling import Samples


def write_geneval_folder(out: Path, s: Samples) -> list[str]:
    """GenEval's generation layout (``generation/diffusers_generate.py``): ``NNNNN/metadata.jsonl`` (the metadata as
    one JSON object) and ``NNNNN/samples/NNNN.png``, under ``out/images``. Returns each image's path relative to ``out``."""
    from PIL import Image

    names = []
    for img, meta, pid, k in zip(s.images, s.metas, s.prompt_ids, s.sample_ids, strict=True):
        folder = out / IMAGES_DIR / f"{pid:05d}"
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        if k == 0:
            (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        name = f"{IMAGES_DIR}/{pid:05d}/samples/{k:04d}.png"
        Image.fromarray(img).save(out / name)
        names.append(name)
    return names


def read_geneval_folder(folder: Path) -> list[tuple[dict, np.ndarray, str, int]]:
    """Images in GenEval's folder layout, as upstream ``evaluate_images.py`` ``main`` walks them: every all-digit
    subfolder holds ``metadata.jsonl`` (one JSON object) and ``samples/<digits>.png``. Returns
    ``(metadata, uint8 [H, W, 3] image, path, sample number)`` in folder then sample order."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise EvalError(f"--images {folder}: not a directory")
    out = []
    for sub in sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        meta_file = sub / "metadata.jsonl"
        if not meta_file.is_file():
            raise EvalError(f"{sub}: no metadata.jsonl (GenEval's layout: NNNNN/metadata.jsonl + NNNNN/samples/*.png)")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise EvalError(f"{meta_file}: not one JSON object: {e}") from None
        pngs = [p for p in (sub / "samples").glob("*.png") if re.fullmatch(r"\d+\.png", p.name)]
        for png in sorted(pngs, key=lambda p: int(p.stem)):
            with Image.open(png) as im:
                out.append((meta, np.asarray(im.convert("RGB")), str(png), int(png.stem)))
    if not out:
        raise EvalError(f"--images {folder}: no NNNNN/samples/NNNN.png images found")
    return out
