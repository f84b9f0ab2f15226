"""The VAE against diffusers' AutoencoderKLCogVideoX on the same random weights (float32)."""

from __future__ import annotations

import pytest
import torch

from fixtures.margins import assert_within
from fixtures.tiny_vae import _CODER
from fixtures.vae_diffusers import diffusers_vae

pytestmark = pytest.mark.parity
# Max abs error against diffusers in float32, measured with tools/check_portability.py (ATEN default/
# avx2/avx512, oneDNN and MKL AVX2, 1-2 threads): decoded frames max 8.6e-6, encoder moments and
# posterior mode max 2.0e-6.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference(tiny_vae_file):
    pytest.importorskip("diffusers")
    return diffusers_vae(tiny_vae_file[1], _CODER["ch"], _CODER["ch_mult"], _CODER["num_res_blocks"])


@pytest.mark.parametrize("latent_frames, pixel_frames", [(1, 1), (3, 9), (5, 17), (13, 49)])
def test_decode_1_0_matches_diffusers(tiny_vae, reference, latent_frames, pixel_frames):
    z = torch.randn(1, 16, latent_frames, 2, 2, generator=torch.Generator().manual_seed(latent_frames))
    ours = tiny_vae.decode(z)
    with torch.no_grad():
        theirs = reference.decode(z).sample
    assert ours.shape[2] == pixel_frames
    assert_within(ours, theirs, TOLERANCE, "decode")


def test_decode_non_square_batch_matches_diffusers(tiny_vae, reference):
    z = torch.randn(2, 16, 5, 3, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        theirs = reference.decode(z).sample
    assert_within(tiny_vae.decode(z), theirs, TOLERANCE, "decode")


def test_decode_1_5_diffusers_schedule_matches_diffusers_pipeline(tiny_vae, reference):
    """diffusers' 1.5 pipeline drops the padding latent and decodes the rest: 22 -> 81 frames."""
    z = torch.randn(1, 16, 22, 2, 2, generator=torch.Generator().manual_seed(22))
    ours = tiny_vae.decode(z, schedule="1.5-diffusers")
    with torch.no_grad():
        theirs = reference.decode(z[:, :, 1:]).sample
    assert ours.shape[2] == 81
    assert_within(ours, theirs, TOLERANCE, "decode")
    assert tiny_vae.decode(z, schedule="1.5").shape[2] == 84


@pytest.mark.parametrize("frames, size", [(1, (16, 16)), (5, (16, 16)), (9, (16, 24)), (9, (24, 16))])
def test_encoder_moments_match_diffusers(tiny_vae, reference, frames, size):
    x = torch.rand(1, 3, frames, *size, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    with torch.no_grad():
        theirs = reference._encode(x)  # moments before the posterior: mean then logvar
    assert_within(tiny_vae.encode_moments(x), theirs, TOLERANCE, "moments")


def test_posterior_mode_matches_diffusers(tiny_vae, reference):
    x = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        theirs = reference.encode(x).latent_dist.mode()
    tiny_vae.regularization.sample = False
    try:
        ours = tiny_vae.encode(x)
    finally:
        tiny_vae.regularization.sample = True
    assert_within(ours, theirs, TOLERANCE, "posterior mode")
