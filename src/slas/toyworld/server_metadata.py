"""The reward server's metadata for ShapesWorld's verifier rewards: each request's metadata goes through the rewards'
own ``prepare`` hook (``slas.toyworld.rewards.prepare_meta``: a meta without ``include`` is parsed from its prompt
text, given metadata is checked against the GenEval schema the verifier reads), and the images must be ShapesWorld's
size. What cannot be served is a ValueError, which the server answers with a 400 naming what the reward needs.
Importing this module registers it (``slas.rewards.server.register_metadata``)."""

from __future__ import annotations

import numpy as np

from slas.rewards.server import register_metadata
from slas.toyworld.rewards import VERIFIER_REWARDS, prepare_meta
from slas.toyworld.world import CANVAS

NEEDS = ("needs ShapesWorld metadata (include = [{class, count[, color][, position]}, ...]) in metas, or prompts "
         "that slas.toyworld.parse reads")


def resolve(reward: str, images: np.ndarray, prompts: list[str], metas: list[dict]) -> list[dict]:
    """The metadata reward ``reward`` reads, one per image (the client's metas are not modified); ValueError for a
    prompt the grammar rejects (its message), malformed metadata or images that are not ShapesWorld's size."""
    if len(images) and images.shape[1:3] != (CANVAS, CANVAS):
        raise ValueError(f"reward {reward!r} judges ShapesWorld images of {CANVAS}x{CANVAS} pixels, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    out = []
    for i, (prompt, meta) in enumerate(zip(prompts, metas, strict=True)):
        try:
            out.append(prepare_meta(prompt, meta))
        except ValueError as e:
            where = f"metas[{i}]" if isinstance(meta, dict) and "include" in meta else f"prompts[{i}]"
            raise ValueError(f"{where}: {e}; reward {reward!r} {NEEDS}") from None
    return out


for _name in VERIFIER_REWARDS:
    register_metadata(_name, lambda images, prompts, metas, name=_name: resolve(name, images, prompts, metas))
