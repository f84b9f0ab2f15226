"""Parity of cogvid's SAT DiT with diffusers' CogVideoXTransformer3DModel (float32, random weights).

Weights are written in the SAT layout, loaded through cogvid's loader, converted with the
documented key map (REFERENCE §8) for diffusers, and both forwards compared (batch 2).
diffusers' final-norm eps is set to SAT's 1e-6 (REFERENCE §3.7).
"""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.dit_diffusers import diffusers_rotary, diffusers_transformer
from fixtures.margins import assert_error_beyond, assert_error_within, max_rel_error
from fixtures.tiny_dit import TEXT_HIDDEN, TEXT_LENGTH, tiny_network_config, write_tiny_dit
from omegaconf import OmegaConf

from cogvid.dit import load_dit

pytestmark = pytest.mark.parity

# (variant, config latent (h, w), input latent (h, w), latent frame counts)
CASES = [
    ("2b", (8, 8), (8, 8), (2, 3)),
    ("2b", (8, 8), (6, 10), (1, 3)),  # off the training grid: the table is recomputed (as diffusers does)
    ("5b", (8, 8), (8, 8), (2, 3)),
    ("5b", (6, 10), (6, 10), (1, 3)),
    # diffusers swaps the learned table for sin-cos below the configured frame count (SAT slices
    # it), so 5B-I2V is compared at full length, with two configured lengths (9 and 5 frames).
    ("5b-i2v", (8, 8), (8, 8), (3,)),
    ("5b-i2v-5f", (6, 10), (6, 10), (2,)),
    ("1.5", (12, 12), (8, 8), (2, 4)),
    ("1.5", (12, 12), (6, 10), (2, 4)),
    ("1.5-i2v", (12, 12), (8, 8), (2, 4)),
    ("1.5-i2v", (12, 12), (6, 10), (2, 4)),
]


# Max abs error / max |diffusers output|; measured with tools/check_portability.py (ATEN default/avx2/
# avx512, oneDNN and MKL AVX2, 1-2 threads): max 4.5e-7. A wrong position table alone gives 0.26.
REL_TOLERANCE = 1e-5


@pytest.mark.parametrize(("variant", "config_hw", "input_hw", "frame_counts"), CASES)
def test_forward_matches_diffusers(tmp_path, variant, config_hw, input_hw, frame_counts):
    overrides = {"latent_height": config_hw[0], "latent_width": config_hw[1]}
    if variant.endswith("-5f"):
        variant, overrides["num_frames"] = variant[: -len("-5f")], 5
    config = tiny_network_config(variant, **overrides)
    state = write_tiny_dit(tmp_path / "transformer", variant, seed=7, **overrides)
    model = load_dit(config, tmp_path / "transformer", dtype=torch.float32, device="cpu")
    reference = diffusers_transformer(config["params"], state)
    generator = torch.Generator().manual_seed(3)
    for frames in frame_counts:
        x = torch.randn(2, frames, model.in_channels, *input_hw, generator=generator)
        timesteps = torch.tensor([999.0, 17.0])
        context = torch.randn(2, TEXT_LENGTH, TEXT_HIDDEN, generator=generator)
        ofs = torch.tensor([2.0]) if variant == "1.5-i2v" else None
        with torch.no_grad():
            out = model(x, timesteps, context, ofs=ofs)
            rotary = diffusers_rotary(config["params"], frames, *input_hw)
            ref = reference(hidden_states=x, encoder_hidden_states=context, timestep=timesteps, ofs=ofs,
                            image_rotary_emb=rotary).sample
        assert out.shape == ref.shape == x[:, :, : model.out_channels].shape
        assert_error_within(max_rel_error(out, ref), REL_TOLERANCE, f"{frames} frames, relative")


def test_shipped_demo_model_matches_diffusers():
    """cogvideox-tiny: patch size 1 and a sin-cos table without interpolation (both diffusers options)."""
    from cogvid.config import load_config
    from cogvid.registry import get_model

    entry = get_model("cogvideox-tiny")
    config = OmegaConf.to_container(load_config(entry.config_files()).model.network_config, resolve=True)
    model = load_dit(config, entry.weight_paths()["transformer"], dtype=torch.float32, device="cpu")
    assert model.patch_size == 1
    reference = diffusers_transformer(config["params"], model.state_dict())
    default_scale = copy.deepcopy(config["params"])  # diffusers' default interpolation, not this model's
    default_scale["modules"]["pos_embed_config"]["params"].update(height_interpolation=1.875, width_interpolation=1.875)
    other_table = diffusers_transformer(default_scale, model.state_dict())
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, model.in_channels, 4, 4, generator=generator)  # (B, T, C, h, w): 9 frames of 32 x 32
    text = config["params"]["modules"]["patch_embed_config"]["params"]["text_hidden_size"]
    context = torch.randn(2, config["params"]["modules"]["pos_embed_config"]["params"]["text_length"], text, generator=generator)
    timesteps = torch.tensor([999.0, 17.0])
    with torch.no_grad():
        out = model(x, timesteps, context)
        ref = reference(hidden_states=x, encoder_hidden_states=context, timestep=timesteps).sample
        other = other_table(hidden_states=x, encoder_hidden_states=context, timestep=timesteps).sample
    assert_error_within(max_rel_error(out, ref), REL_TOLERANCE, "relative")
    assert_error_beyond(max_rel_error(other, ref), 100 * REL_TOLERANCE, "interpolation 1.875, relative")


def test_learned_table_refuses_other_grids(tmp_path):
    from cogvid.errors import UsageError

    config = tiny_network_config("5b-i2v")
    write_tiny_dit(tmp_path / "t", "5b-i2v", seed=1)
    model = load_dit(config, tmp_path / "t", dtype=torch.float32, device="cpu")
    x = torch.zeros(1, 2, model.in_channels, 6, 10)
    with pytest.raises(UsageError, match="learned position table"):
        model(x, torch.tensor([1.0]), torch.zeros(1, TEXT_LENGTH, TEXT_HIDDEN))
