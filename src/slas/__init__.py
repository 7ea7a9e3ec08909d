"""slas: online RL post-training of text-to-image diffusion / flow models.

Importing the package is cheap: torch, diffusers and transformers are only
imported by the submodules that need them.
"""

__version__ = "0.1.0"
