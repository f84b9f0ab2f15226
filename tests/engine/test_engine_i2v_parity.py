"""Image-to-video end to end vs diffusers' CogVideoXImageToVideoPipeline (1.0 semantics, tiny weights).

The model is loaded from original-style YAMLs with explicit paths (``cogvid.load(configs=...)``). The
image latent is a posterior SAMPLE in both (the original samples even at inference); both draw it first
from a generator seeded alike, so the same noise is used. As in the T2V test, diffusers is given the
original's zero unconditional input and subset-rescaled alphas, and cogvid's alpha quantization (the one
remaining documented difference) is switched off for the comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

import cogvid  # noqa: E402
from e2e_reference import reference_pipeline, write_tiny_i2v_model  # noqa: E402
from fixtures.margins import assert_within  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.slow]
PROMPT = "a blue square moving up"
# A divisor of 1000: for other step counts diffusers' "trailing" timesteps and its `t - 1000 // steps`
# previous timestep differ from the original's `linspace(999, 0, n).astype(int)` (e.g. 6 steps: 333 vs 332).
STEPS = 5
# Frames in [0, 1], max abs error against diffusers; measured with tools/check_portability.py (ATEN
# default/avx2/avx512, oneDNN and MKL AVX2, 1-2 threads): max 1.2e-5 (the T2V test shows the
# switched-off alpha quantization alone moves frames by 8.7e-4).
FRAME_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def i2v(tmp_path_factory):
    configs = write_tiny_i2v_model(tmp_path_factory.mktemp("i2v"))
    return cogvid.load(configs=configs)


def _load_i2v(folder: Path, frames: int):
    return cogvid.load(configs=write_tiny_i2v_model(folder, num_frames=frames))


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[:] = (240, 240, 240)
    pixels[10:30, 20:40] = (30, 60, 220)
    pixels += rng.integers(0, 10, pixels.shape, dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("frames", [9, 17])
def test_i2v_matches_diffusers(tmp_path, monkeypatch, frames):
    # The learned position table is compared at the frame count it was built for: below it diffusers
    # swaps in a sin-cos table while the original slices the learned one (REFERENCE §3.7 item 4).
    i2v = _load_i2v(tmp_path, frames)
    latent_frames = (frames - 1) // 4 + 1
    noise = torch.randn((1, latent_frames, 16, 6, 8), generator=torch.Generator().manual_seed(frames))
    reference = reference_pipeline(i2v, original_alphas=True, num_steps=STEPS, image_to_video=True)
    reference.set_progress_bar_config(disable=True)
    max_length = i2v.engine.conditioner.embedders[0].max_length
    embeds, _ = reference.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=max_length)
    expected = reference(
        image=_image(), prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds),
        num_frames=frames, height=48, width=64, num_inference_steps=STEPS, guidance_scale=6.0,
        use_dynamic_cfg=True, latents=noise.clone(), output_type="pt", max_sequence_length=max_length,
        generator=torch.Generator().manual_seed(5),
    ).frames[0]
    monkeypatch.setattr(i2v.engine.denoiser, "possibly_quantize_sigma", lambda sigma: sigma)
    video = i2v.generate(PROMPT, image=_image(), num_frames=frames, steps=STEPS, sampler="ddim", guidance=6.0, latents=noise, seed=5)
    ours = ((i2v.engine.decode(video.latents)[0] + 1) / 2).clamp(0, 1)
    assert ours.shape == expected.shape == (frames, 3, 48, 64)
    assert_within(ours, expected, FRAME_TOLERANCE, "frames")


def test_i2v_image_latent_is_scaled_and_concatenated_as_v1(i2v):
    engine = i2v.engine
    pixels = torch.rand(1, 3, 1, 48, 64) * 2 - 1
    latents = engine.encode_image(pixels, 3, torch.Generator().manual_seed(0))
    raw = engine.first_stage.encode(pixels, generator=torch.Generator().manual_seed(0))  # (1, 16, 1, 6, 8)
    assert latents.shape == (1, 3, 16, 6, 8)
    torch.testing.assert_close(latents[:, 0], raw[:, :, 0] * engine.scale_factor)  # 1.0: x scale_factor
    assert torch.count_nonzero(latents[:, 1:]) == 0


def test_i2v_model_refuses_no_image_and_other_sizes(i2v):
    with pytest.raises(cogvid.CogvidError, match="needs an image"):
        i2v.generate(PROMPT)
    with pytest.raises(cogvid.CogvidError, match="only"):
        i2v.generate(PROMPT, image=_image(), height=64, width=64)
