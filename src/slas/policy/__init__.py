"""Backbone adapters: one file per backbone behind the narrow ``Backbone`` protocol."""

from __future__ import annotations

from slas.policy.base import Backbone, index_cond

# model.backbone name -> (module:class or the class, what the network predicts). The prediction is listed here so
# that config validation can pick the sampler without importing diffusers. Plugins add theirs with
# ``register_adapter`` (ShapesWorld's ``toy``: slas.toyworld.backbone).
_ADAPTERS: dict[str, tuple[str | type, str]] = {
    "flux": ("slas.policy.flux:FluxBackbone", "velocity"),  # FLUX.1 dev / schnell
    "sd3": ("slas.policy.sd3:SD3Backbone", "velocity"),  # Stable Diffusion 3 / 3.5
    "sd": ("slas.policy.sd:SDBackbone", "epsilon"),  # Stable Diffusion 1.x
}


def register_adapter(name: str, target: str | type, prediction: str) -> None:
    """Register backbone ``name`` (``model.backbone``): its adapter class (or ``"module:Class"``, imported on first
    use) and what its network predicts (``velocity`` or ``epsilon``)."""
    if prediction not in ("velocity", "epsilon"):
        raise ValueError(f"prediction must be 'velocity' or 'epsilon', got {prediction!r}")
    if name in _ADAPTERS and _ADAPTERS[name][0] is not target:
        raise ValueError(f"backbone {name!r} is already registered")
    _ADAPTERS[name] = (target, prediction)


def adapters() -> dict[str, str]:
    """Registered backbone name -> what it predicts (plugins loaded)."""
    from slas.plugins import load_plugins

    load_plugins()
    return {k: v[1] for k, v in sorted(_ADAPTERS.items())}


def adapter_class(name: str):
    """The adapter class of ``model.backbone`` ``name``; it builds itself with ``from_config(model_cfg)``."""
    known = adapters()
    if name not in known:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(known)}")
    from slas.plugins import resolve

    return resolve(_ADAPTERS[name][0])


__all__ = ["Backbone", "adapter_class", "adapters", "index_cond", "register_adapter"]
