"""ShapesWorld: a small, verifiable text-to-image world (see README)."""

from .renderer import render
from .verifier import VerifyResult, verify, verify_batch
from .world import (
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
