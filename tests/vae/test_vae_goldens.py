"""The VAE against golden tensors produced by the ORIGINAL CogVideo ``vae_modules`` (see goldens/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cogvid.config import instantiate
from fixtures.tiny_vae import tiny_first_stage_config

GOLDENS = Path(__file__).parent / "goldens"
TOLERANCE = 1e-5


def _load(name: str) -> dict:
    return torch.load(GOLDENS / name, weights_only=True)


@pytest.fixture(scope="module")
def v1_0() -> dict:
    return _load("vae_v1_0.pt")


@pytest.fixture(scope="module")
def head() -> dict:
    return _load("vae_head.pt")


@pytest.fixture(scope="module")
def vae_1_5(tiny_vae_file):
    return instantiate(tiny_first_stage_config(ckpt_path=str(tiny_vae_file[0]), generation="1.5"))


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item()


@pytest.mark.parametrize("name", ["vae_v1_0.pt", "vae_head.pt"])
def test_golden_weights_are_the_fixture_weights(name, tiny_vae_file):
    """The goldens were made with write_tiny_vae(seed=0); if the fixture drifts they must be regenerated."""
    golden = _load(name)
    state = tiny_vae_file[1]
    assert golden["weight_keys"] == sorted(state)
    fingerprint = torch.stack(
        [torch.stack([state[k].double().sum(), state[k].double().abs().sum()]) for k in golden["weight_keys"]]
    )
    torch.testing.assert_close(fingerprint, golden["weight_fingerprint"], rtol=1e-9, atol=1e-9)


def test_v1_0_chunked_decode_matches_sample_video(tiny_vae, v1_0):
    frames = tiny_vae.decode(v1_0["z13"])
    assert frames.shape[2] == 49
    assert _max_error(frames, v1_0["decoded13"]) <= TOLERANCE


def test_v1_0_whole_clip_decode_matches_unchunked_original(tiny_vae, v1_0):
    z = v1_0["z13"][:, :, :5]
    assert _max_error(tiny_vae.decode(z, schedule="whole"), v1_0["decoded5_whole"]) <= TOLERANCE
    # Chunking changes the numbers (per-chunk GroupNorm): the default decode is not the whole-clip one.
    assert _max_error(tiny_vae.decode(z), v1_0["decoded5_whole"]) > 1e-3


def test_head_decode_first_stage_matches_1_5(vae_1_5, head):
    frames = vae_1_5.decode(head["z22"])
    assert frames.shape[2] == 84
    assert _max_error(frames, head["decoded22"]) <= TOLERANCE


@pytest.mark.parametrize("clip, moments", [("video9", "moments9"), ("image", "moments1")])
def test_encoder_moments_match_both_code_bases(tiny_vae, vae_1_5, v1_0, head, clip, moments):
    assert _max_error(tiny_vae.encode_moments(v1_0[clip]), v1_0[moments]) <= TOLERANCE
    assert _max_error(vae_1_5.encode_moments(head[clip]), head[moments]) <= TOLERANCE
