"""CogVideoX 1.5 semantics end to end on a tiny 1.5-I2V-style model (REFERENCE §4.6, §7.3, §7.4).

- 16k+1 frames, one padding latent: 17 frames -> 5 latents + 1 = 6;
- the original decode drops latent 0 and turns every other latent into 4 frames (6 -> 20, as
  81 -> 84 for the released model); `decode="diffusers"` gives diffusers' 17;
- the image latent is the RAW VAE sample (x scale_factor, then / scale_factor), unlike 1.0;
- the DiT receives `ofs` = 2.0.
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
from cogvid.request import GenerationRequest  # noqa: E402
from e2e_reference import write_tiny_i2v_model  # noqa: E402


@pytest.fixture(scope="module")
def v15(tmp_path_factory):
    return cogvid.load(configs=write_tiny_i2v_model(tmp_path_factory.mktemp("v15"), generation="1.5"))


def _image() -> Image.Image:
    return Image.fromarray(np.full((96, 128, 3), (200, 40, 40), dtype=np.uint8))


def test_spec_and_frame_rules(v15):
    spec = v15.spec
    assert spec.generation == "1.5" and spec.task == "i2v"
    assert spec.latent_frames(17) == 6
    with pytest.raises(cogvid.CogvidError, match="16k\\+1"):
        v15.prepare(GenerationRequest("a red square", frames=9, height=48, width=64), picture=_image())


@pytest.mark.slow
def test_original_decode_gives_4_frames_per_latent_and_diffusers_option_gives_requested(v15):
    seen = {}
    original_forward = v15.engine.network.forward

    def spy(*args, **kwargs):
        seen["ofs"] = kwargs.get("ofs")
        return original_forward(*args, **kwargs)

    v15.engine.network.forward = spy
    try:
        video = v15.generate("a red square", image=_image(), height=48, width=64, steps=2, seed=1)
    finally:
        del v15.engine.network.forward
    assert video.frames.shape == (20, 48, 64, 3)
    assert video.metadata["latent_frames"] == 6 and video.metadata["requested_frames"] == 17
    assert torch.equal(seen["ofs"].cpu(), torch.tensor([2.0]))
    diffusers_style = v15.generate("a red square", image=_image(), height=48, width=64, steps=2, seed=1,
                                   decode="diffusers")
    assert diffusers_style.frames.shape == (17, 48, 64, 3)


def test_image_latent_is_the_raw_sample(v15):
    engine = v15.engine
    pixels = torch.rand(1, 3, 1, 48, 64) * 2 - 1
    latents = engine.encode_image(pixels, 6, torch.Generator().manual_seed(0))
    raw = engine.first_stage.encode(pixels, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (1, 6, 16, 6, 8)
    torch.testing.assert_close(latents[:, 0], raw[:, :, 0])  # not multiplied by scale_factor 0.7
    assert torch.count_nonzero(latents[:, 1:]) == 0
