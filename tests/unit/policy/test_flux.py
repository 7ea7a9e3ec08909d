"""The FLUX adapter's latent packing (slas.policy.flux) against FluxPipeline's own."""

import torch

from slas.policy.flux import image_ids, pack, unpack


def test_flux_packing_matches_the_pipeline():
    from diffusers import FluxPipeline

    x = torch.randn(2, 16, 6, 4)
    packed = pack(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 16, 6, 4))
    assert torch.equal(unpack(packed, 6, 4), x)
    assert torch.equal(image_ids(3, 2), FluxPipeline._prepare_latent_image_ids(1, 3, 2, "cpu", torch.float32))
