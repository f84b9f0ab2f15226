"""`cogvid export` to the diffusers layout (issue 15, must-show 2).

SAT -> diffusers -> cogvid gives identical frames for every variant style; diffusers' own pipeline loads
the export and its transformer computes what cogvid's DiT computes; a SAT LoRA exported with
``--lora-only`` and fused by diffusers equals cogvid's merge; LoRAs merged into an export run as cogvid
runs them; exports are atomic and never overwrite.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cogvid
from cogvid.cli.app import app
from cogvid.diffusers_weights import dit_to_diffusers
from cogvid.errors import MissingFileError, UsageError
from cogvid.export import LORA_FILE, export
from fixtures.variant_folders import VARIANTS, request_kwargs, write_variant

pytestmark = [pytest.mark.parity, pytest.mark.slow]

DIT_TOLERANCE = 1e-5  # relative, as tests/dit/test_dit_parity.py (float32; measured below 2e-6 there)


def _diffusers_forward(transformer, pipe, variant: str, frames: int):
    """cogvid's DiT and diffusers' transformer on the same random input (batch 2)."""
    from fixtures.dit_diffusers import diffusers_rotary
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(pipe.config.model.network_config.params, resolve=True)
    network = pipe.engine.network
    text = params["modules"]["pos_embed_config"]["params"]["text_length"]
    hidden = params["modules"]["patch_embed_config"]["params"]["text_hidden_size"]
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, frames, network.in_channels, 6, 8, generator=generator)
    context = torch.randn(2, text, hidden, generator=generator)
    timesteps = torch.tensor([999.0, 17.0])
    ofs = torch.tensor([2.0]) if variant == "1.5-i2v" else None
    with torch.no_grad():
        ours = network(x, timesteps, context, ofs=ofs)
        theirs = transformer(hidden_states=x, encoder_hidden_states=context, timestep=timesteps, ofs=ofs,
                             image_rotary_emb=diffusers_rotary(params, frames, 6, 8)).sample
    return ours, theirs


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_and_diffusers_loads_the_export(variant, tmp_path):
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline, DiffusionPipeline

    source = write_variant(tmp_path / "sat", variant)
    exported = export(str(source), tmp_path / "diffusers")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    sat, copy = cogvid.load(str(source)), cogvid.load(str(exported.folder))
    a, b = sat.generate(**request_kwargs(variant)), copy.generate(**request_kwargs(variant))
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)

    pipeline = DiffusionPipeline.from_pretrained(str(exported.folder))
    expected = CogVideoXImageToVideoPipeline if variant.endswith("i2v") else CogVideoXPipeline
    assert type(pipeline) is expected
    transformer = pipeline.transformer.eval()
    transformer.norm_out.norm.eps = 1e-6  # SAT's final AdaLN LayerNorm eps (REFERENCE §3.7 item 1), as in the DiT tests
    frames = {"5b-i2v": 5, "1.5": 4, "1.5-i2v": 2}.get(variant, 3)  # 5B-I2V's learned table: full length only
    ours, theirs = _diffusers_forward(transformer, sat, variant, frames)
    assert ours.shape == theirs.shape
    assert ((ours - theirs).abs().max() / theirs.abs().max()).item() <= DIT_TOLERANCE


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    """A rank-4 SAT LoRA run for test-tiny with lora_alpha 2 (scaling 0.5)."""
    from fixtures.tiny_lora import write_tiny_lora

    from cogvid.checkpoint import read_state_dict, split_engine_state
    from cogvid.registry import get_model

    base = split_engine_state(read_state_dict(get_model("test-tiny").weight_paths()["transformer"]))["dit"]
    folder = tmp_path_factory.mktemp("lora") / "run"
    write_tiny_lora(folder, base, rank=4, seed=5, alpha=2.0)
    return folder


def test_lora_only_export_fused_by_diffusers_equals_cogvid_merge(tiny_lora, tmp_path):
    from diffusers import CogVideoXPipeline

    exported = export("test-tiny", tmp_path / "lora", loras=[f"{tiny_lora}:0.7"], lora_only=True)
    assert [p.name for p in exported.files] == [LORA_FILE]
    base = export("test-tiny", tmp_path / "base")
    pipeline = CogVideoXPipeline.from_pretrained(str(base.folder))
    before = {k: v.clone() for k, v in pipeline.transformer.state_dict().items()}
    pipeline.load_lora_weights(str(exported.folder))
    pipeline.fuse_lora(lora_scale=1.0)
    pipeline.unload_lora_weights()
    fused = pipeline.transformer.state_dict()
    merged = cogvid.load("test-tiny", lora=[f"{tiny_lora}:0.7"]).engine.network
    optional = merged.optional_state_keys()
    ours = dit_to_diffusers({k: v for k, v in merged.state_dict().items() if k not in optional})
    assert set(ours) == set(fused)
    changed = [k for k in ours if not torch.equal(before[k], fused[k])]
    assert len(changed) == 2 * 4  # to_q, to_k, to_v, to_out.0 in both layers
    worst = max((ours[k] - fused[k]).abs().max().item() for k in ours)
    assert worst <= 1e-6  # float32 rounding of B A x alpha/r x scale in two orders; measured 3.0e-8


def test_merged_lora_export_runs_as_cogvid_runs_the_lora(tiny_lora, tmp_path):
    exported = export("test-tiny", tmp_path / "merged", loras=[f"{tiny_lora}:0.7"])
    noise = torch.randn((1, 3, 16, 6, 8), generator=torch.Generator().manual_seed(2))
    ours = cogvid.load("test-tiny", lora=[f"{tiny_lora}:0.7"]).generate("a cat", num_frames=9, steps=2, seed=1, latents=noise)
    theirs = cogvid.load(str(exported.folder)).generate("a cat", num_frames=9, steps=2, seed=1, latents=noise)
    assert np.array_equal(ours.frames, theirs.frames)


def test_a_patch_size_other_than_two_travels_with_the_export(tmp_path):
    """The demo model's DiT has patch 1 (the released models 2): the export's config says so, diffusers
    builds the transformer with it, and cogvid runs the export with the same frames as the original."""
    from diffusers import CogVideoXTransformer3DModel

    exported = export("cogvideox-tiny", tmp_path / "diffusers")
    assert json.loads((exported.folder / "transformer" / "config.json").read_text())["patch_size"] == 1
    assert CogVideoXTransformer3DModel.from_pretrained(str(exported.folder / "transformer")).config.patch_size == 1
    sat, copy = cogvid.load("cogvideox-tiny"), cogvid.load(str(exported.folder))
    a, b = (pipe.generate("a red circle moving left", seed=1, steps=4) for pipe in (sat, copy))
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)


def test_export_is_atomic_and_never_overwrites(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UsageError, match="already exists"):
        export("test-tiny", out)
    source = write_variant(tmp_path / "sat", "5b")
    (tmp_path / "sat" / "model.yaml").write_text((source / "model.yaml").read_text().replace("3d-vae.pt", "missing.pt"))
    with pytest.raises(MissingFileError):
        export(str(source), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sat"]  # no partial folder left


def test_cli_export(tmp_path, tiny_lora):
    runner = CliRunner()
    result = runner.invoke(app, ["export", "test-tiny", str(tmp_path / "d"), "--to", "diffusers", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["folder"] == str(tmp_path / "d") and (tmp_path / "d" / "model_index.json").is_file()
    again = runner.invoke(app, ["export", "test-tiny", str(tmp_path / "d")])
    assert again.exit_code == 2 and "already exists" in again.output
    lora = runner.invoke(app, ["export", "test-tiny", str(tmp_path / "l"), "--lora", str(tiny_lora), "--lora-only"])
    assert lora.exit_code == 0, lora.output
    assert (tmp_path / "l" / LORA_FILE).is_file()
    bad = runner.invoke(app, ["export", "test-tiny", str(tmp_path / "x"), "--to", "sat"])
    assert bad.exit_code == 2 and "--to diffusers" in bad.output
