"""Backbone adapters: one file per backbone behind the narrow ``Backbone`` protocol."""

from .base import Backbone, index_cond

__all__ = ["Backbone", "index_cond"]
