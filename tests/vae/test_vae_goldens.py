"""The VAE against golden tensors produced by the ORIGINAL CogVideo ``vae_modules`` (see goldens/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cogvid.config import instantiate
from fixtures.margins import assert_beyond, assert_error_beyond, assert_error_within, assert_within
from fixtures.tiny_vae import tiny_first_stage_config, tiny_vae_state_dict

GOLDENS = Path(__file__).parent / "goldens"
# The goldens come from another CPU: float32 agrees to rounding, not bit for bit. Max abs errors,
# measured with tools/check_portability.py (ATEN default/avx2/avx512, oneDNN and MKL AVX2, 1-2 threads):
DECODE_TOLERANCE = 1e-4  # frames |x| <= 7.5; measured max 1.3e-5. The chunked vs whole-clip decode differ by 2.6
MOMENTS_TOLERANCE = 2.5e-5  # encoder moments |x| <= 1.4; measured max 2.6e-6
FINGERPRINT_TOLERANCE = 1e-6  # weight fingerprints, relative (see _fingerprint_error); measured max 1.2e-7. Seed 1: 1.5


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


def _fingerprint_error(state: dict, golden: dict) -> float:
    """Largest difference of the per-tensor (sum, sum of |w|) fingerprints, relative to each tensor's sum of |w|.

    Rounding every weight by a relative ``e`` moves either sum by at most ``e * sum |w|``, so this
    stays near float32 rounding for the same weights and is ~1/sqrt(numel) for other random ones.
    """
    fingerprint = torch.stack(
        [torch.stack([state[k].double().sum(), state[k].double().abs().sum()]) for k in golden["weight_keys"]]
    )  # (tensors, 2)
    expected = golden["weight_fingerprint"]
    return ((fingerprint - expected).abs() / expected[:, 1:]).max().item()


@pytest.mark.parametrize("name", ["vae_v1_0.pt", "vae_head.pt"])
def test_golden_weights_are_the_fixture_weights(name, tiny_vae_file):
    """The goldens were made with write_tiny_vae(seed=0); if the fixture drifts they must be regenerated."""
    golden = _load(name)
    state = tiny_vae_file[1]
    assert golden["weight_keys"] == sorted(state)
    # Not bit for bit: torch.randn rounds differently without AVX2 (ATEN default: 1.2e-7, else 0).
    assert_error_within(_fingerprint_error(state, golden), FINGERPRINT_TOLERANCE, "fingerprint, relative")
    if name == "vae_v1_0.pt":  # other weights are far outside the tolerance
        other = tiny_vae_state_dict(seed=1)
        assert_error_beyond(_fingerprint_error(other, golden), 1000 * FINGERPRINT_TOLERANCE, "seed 1 fingerprint")


def test_v1_0_chunked_decode_matches_sample_video(tiny_vae, v1_0):
    frames = tiny_vae.decode(v1_0["z13"])
    assert frames.shape[2] == 49
    assert_within(frames, v1_0["decoded13"], DECODE_TOLERANCE, "decode")


def test_v1_0_whole_clip_decode_matches_unchunked_original(tiny_vae, v1_0):
    z = v1_0["z13"][:, :, :5]
    assert_within(tiny_vae.decode(z, schedule="whole"), v1_0["decoded5_whole"], DECODE_TOLERANCE, "decode")
    # Chunking changes the numbers (per-chunk GroupNorm): the default decode is not the whole-clip one.
    assert_beyond(tiny_vae.decode(z), v1_0["decoded5_whole"], 10 * DECODE_TOLERANCE, "chunked decode")


def test_head_decode_first_stage_matches_1_5(vae_1_5, head):
    frames = vae_1_5.decode(head["z22"])
    assert frames.shape[2] == 84
    assert_within(frames, head["decoded22"], DECODE_TOLERANCE, "decode")


@pytest.mark.parametrize("clip, moments", [("video9", "moments9"), ("image", "moments1")])
def test_encoder_moments_match_both_code_bases(tiny_vae, vae_1_5, v1_0, head, clip, moments):
    assert_within(tiny_vae.encode_moments(v1_0[clip]), v1_0[moments], MOMENTS_TOLERANCE, "moments 1.0")
    assert_within(vae_1_5.encode_moments(head[clip]), head[moments], MOMENTS_TOLERANCE, "moments 1.5")
