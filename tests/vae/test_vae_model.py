"""Decode schedules, the released key layout, construction from the original YAML, progress, tiling."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cogvid.config import instantiate
from cogvid.errors import Cancelled, ConfigError, UsageError
from cogvid.vae import DecodeChunk, VideoAutoencoder, chunk_pixel_frames, decode_plan
from fixtures.tiny_vae import tiny_first_stage_config

REAL_CODER = {
    "double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 2, 4], "attn_resolutions": [], "num_res_blocks": 3, "dropout": 0.0,
}


def _frames(plan: list[DecodeChunk]) -> int:
    return sum(chunk_pixel_frames(c.end - c.start, c.first_frame) for c in plan)


def test_plan_1_0_is_sample_video_loop():
    plan = decode_plan(13, "1.0")
    assert [(c.start, c.end) for c in plan] == [(0, 3), (3, 5), (5, 7), (7, 9), (9, 11), (11, 13)]
    assert {c.first_frame for c in plan} == {"odd"}
    assert _frames(plan) == 49
    assert _frames(decode_plan(11, "1.0")) == 41 and _frames(decode_plan(9, "1.0")) == 33
    assert [(c.start, c.end) for c in decode_plan(1, "1.0")] == [(0, 1)]
    assert [(c.start, c.end) for c in decode_plan(4, "1.0")] == [(0, 2), (2, 4)]  # diffusers' split


def test_plan_1_5_is_head_decode_first_stage():
    plan = decode_plan(22, "1.5")
    assert [c.end - c.start for c in plan] == [3] + [2] * 9
    assert plan[0].start == 1 and plan[-1].end == 22
    assert {c.first_frame for c in plan} == {"never"}
    assert _frames(plan) == 84
    assert _frames(decode_plan(42, "1.5")) == 164
    assert len(decode_plan(42, "1.5")) == 10
    assert _frames(decode_plan(22, "1.5-diffusers")) == 81
    assert _frames(decode_plan(42, "1.5-diffusers")) == 161


@pytest.mark.parametrize("frames, schedule", [(2, "1.5"), (0, "1.0"), (1, "1.5-diffusers"), (5, "2.0")])
def test_plan_rejects_what_the_schedule_cannot_decode(frames, schedule):
    with pytest.raises(UsageError):
        decode_plan(frames, schedule)


def test_real_size_vae_on_meta_has_the_released_keys():
    node = tiny_first_stage_config(
        encoder_config={"target": "vae_modules.cp_enc_dec.ContextParallelEncoder3D", "params": {**REAL_CODER, "gather_norm": True}},
        decoder_config={"target": "vae_modules.cp_enc_dec.ContextParallelDecoder3D", "params": {**REAL_CODER, "gather_norm": False}},
    )
    vae = instantiate(node)  # no ckpt_path: stays on the meta device
    state = vae.state_dict()
    assert len(state) == 436
    assert all(t.is_meta for t in state.values())
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["encoder.conv_in.conv.weight"] == (128, 3, 3, 3, 3)
    assert shapes["encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1, 1)
    assert shapes["encoder.down.2.downsample.conv.weight"] == (256, 256, 3, 3)
    assert "encoder.down.3.downsample.conv.weight" not in shapes
    assert shapes["encoder.conv_out.conv.weight"] == (32, 512, 3, 3, 3)
    assert shapes["decoder.conv_in.conv.weight"] == (512, 16, 3, 3, 3)
    assert shapes["decoder.mid.block_1.norm1.conv_y.conv.weight"] == (512, 16, 1, 1, 1)
    assert shapes["decoder.up.2.block.0.nin_shortcut.weight"] == (256, 512, 1, 1, 1)
    assert shapes["decoder.up.0.block.3.conv2.conv.weight"] == (128, 128, 3, 3, 3)
    assert "decoder.up.0.upsample.conv.weight" not in shapes
    assert shapes["decoder.norm_out.norm_layer.weight"] == (128,)
    assert shapes["decoder.conv_out.conv.weight"] == (3, 128, 3, 3, 3)
    with pytest.raises(UsageError, match="no weights"):
        vae.decode(torch.zeros(1, 16, 1, 1, 1))


def test_builds_from_original_yaml_and_ignores_loss_config(tiny_vae_file):
    node = OmegaConf.create({"model": {"first_stage_config": tiny_first_stage_config(ckpt_path=str(tiny_vae_file[0]))}})
    vae = instantiate(node.model.first_stage_config)
    assert isinstance(vae, VideoAutoencoder)
    assert vae.generation == "1.0" and vae.cp_size == 1
    assert not vae.decoder.conv_in.conv.weight.is_meta


def test_rejects_options_the_released_vae_does_not_have():
    with pytest.raises(ConfigError, match="attn_resolutions"):
        instantiate(tiny_first_stage_config(coder={"attn_resolutions": [16]}))
    with pytest.raises(ConfigError, match="generation"):
        instantiate(tiny_first_stage_config(generation="2.0"))


def test_posterior_sample_needs_a_generator_and_is_reproducible(tiny_vae):
    x = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.raises(ValueError, match="Generator"):
        tiny_vae.encode(x)
    first = tiny_vae.encode(x, generator=torch.Generator().manual_seed(5))
    second = tiny_vae.encode(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    mean, logvar = tiny_vae.encode_moments(x).chunk(2, dim=1)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise)


def test_callback_reports_each_chunk_and_cancel_propagates(tiny_vae):
    z = torch.randn(1, 16, 7, 2, 2, generator=torch.Generator().manual_seed(1))
    seen = []
    tiny_vae.decode(z, callback=lambda index, total: seen.append((index, total)))
    assert seen == [(0, 3), (1, 3), (2, 3)]

    def cancel(index: int, total: int) -> None:
        if index == 1:
            raise Cancelled()

    with pytest.raises(Cancelled):
        tiny_vae.decode(z, callback=cancel)


def test_tiling_with_one_tile_is_the_untiled_decode(tiny_vae):
    z = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(tiny_vae.decode(z, tiling=True, tile_size=4, tile_overlap=1), tiny_vae.decode(z))


def test_tiling_blends_overlapping_tiles(tiny_vae):
    z = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(3))
    untiled = tiny_vae.decode(z)
    seen = []
    tiled = tiny_vae.decode(z, tiling=True, tile_size=3, tile_overlap=1, callback=lambda i, n: seen.append((i, n)))
    assert tiled.shape == untiled.shape == (1, 3, 8, 32, 48)
    assert seen[-1] == (5, 6)  # 2 rows x 3 columns of tiles, 1 chunk each
    assert torch.isfinite(tiled).all()
    # Per-tile GroupNorm statistics make tiling approximate (documented in VideoAutoencoder.decode).
    error = (tiled - untiled).abs()
    assert 0 < error.mean().item() < 0.5 * untiled.abs().mean().item()
    with pytest.raises(UsageError):
        tiny_vae.decode(z, tiling=True, tile_size=3, tile_overlap=3)
