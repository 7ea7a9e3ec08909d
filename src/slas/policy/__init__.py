"""Backbone adapters: one file per backbone behind the narrow ``Backbone`` protocol."""

from __future__ import annotations

import importlib

from .base import Backbone, index_cond

# model.backbone name -> (module:class, what the network predicts). The prediction is listed here so that
# config validation can pick the sampler without importing diffusers.
ADAPTERS: dict[str, tuple[str, str]] = {
    "toy": ("slas.policy.toy:ToyBackbone", "velocity"),  # ShapesWorld, pixel-space rectified flow
    "flux": ("slas.policy.flux:FluxBackbone", "velocity"),  # FLUX.1 dev / schnell
    "sd3": ("slas.policy.sd3:SD3Backbone", "velocity"),  # Stable Diffusion 3 / 3.5
    "sd": ("slas.policy.sd:SDBackbone", "epsilon"),  # Stable Diffusion 1.x
}


def adapter_class(name: str):
    """The adapter class of ``model.backbone`` ``name``; it builds itself with ``from_config(model_cfg)``."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(ADAPTERS)}")
    module, cls = ADAPTERS[name][0].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["ADAPTERS", "Backbone", "adapter_class", "index_cond"]
