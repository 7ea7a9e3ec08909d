"""ShapesWorld: a small, verifiable text-to-image world (see README)."""

from slas.toyworld.renderer import render
from slas.toyworld.verifier import VerifyResult, verify, verify_batch
from slas.toyworld.world import (
    BACKGROUND,
    CANVAS,
    COLORS,
    PALETTE,
    RELATIONS,
    SHAPES,
    TAGS,
    PromptError,
    all_prompts,
    is_ood,
    parse,
    prompt_text,
    split,
)

__all__ = [
    "BACKGROUND", "CANVAS", "COLORS", "PALETTE", "RELATIONS", "SHAPES", "TAGS", "PromptError",
    "VerifyResult", "all_prompts", "is_ood", "parse", "prompt_text", "render", "split", "verify", "verify_batch",
]

from slas.toyworld import plugin  # noqa: E402,F401  (registers the backbone, rewards and world)
