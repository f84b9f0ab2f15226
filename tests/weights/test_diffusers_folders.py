"""Diffusers-layout model folders run with the original's numbers (issue 15, must-show 1).

The same random weights, written by diffusers' own ``save_pretrained`` and in the SAT layout, give
identical latents and frames through cogvid for every variant style; the diffusers copy of the tiny VAE
reproduces the goldens of the original code; a registry model can live in the diffusers layout under
the weights root; mistakes in a folder are named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cogvid
from cogvid.errors import CheckpointError, ConfigError, MissingFileError, UsageError
from fixtures.diffusers_copy import save_diffusers_copy
from fixtures.variant_folders import FAMILIES, VARIANTS, request_kwargs, write_variant

pytestmark = [pytest.mark.parity, pytest.mark.slow]

@pytest.mark.parametrize("variant", VARIANTS)
def test_diffusers_copy_gives_identical_frames(variant, tmp_path):
    sat = cogvid.load(str(write_variant(tmp_path / "sat", variant)))
    folder = save_diffusers_copy(sat, tmp_path / "diffusers")
    copy = cogvid.load(str(folder))
    assert copy.resolved.resembles.startswith(f"resembles {FAMILIES[variant]} ")
    assert copy.resolved.paths.layout == "diffusers"
    # Sizes come from the folder, everything else from the family's original configuration.
    ours, theirs = sat.config.model, copy.config.model
    sizes = lambda params: {k: v for k, v in params.items() if k != "transformer_args"}  # noqa: E731 (training-only args)
    assert sizes(theirs.network_config.params) == sizes(ours.network_config.params)
    assert theirs.sampler_config.params.guider_config.target.endswith("DynamicCFG")
    assert theirs.scale_factor == ours.scale_factor
    assert theirs.denoiser_config.params.discretization_config == ours.denoiser_config.params.discretization_config
    a, b = sat.generate(**request_kwargs(variant)), copy.generate(**request_kwargs(variant))
    assert torch.equal(a.latents, b.latents)
    assert np.array_equal(a.frames, b.frames)


def test_diffusers_vae_reproduces_the_original_goldens(tmp_path):
    """The tiny VAE of the goldens (tests/vae/goldens), saved by diffusers, decodes and encodes within the same tolerance."""
    from fixtures.tiny_vae import tiny_first_stage_config, write_tiny_vae
    from fixtures.vae_diffusers import diffusers_vae

    from cogvid.config import instantiate

    goldens = Path(__file__).parents[1] / "vae" / "goldens"
    state = write_tiny_vae(tmp_path / "3d-vae.pt", seed=0)
    coder = tiny_first_stage_config()["params"]["decoder_config"]["params"]
    diffusers_vae(dict(state), coder["ch"], list(coder["ch_mult"]), coder["num_res_blocks"]).save_pretrained(tmp_path / "vae")
    assert not (tmp_path / "vae" / "3d-vae.pt").exists()
    tolerance = 1e-5  # as tests/vae/test_vae_goldens.py (the same tensors, so the same margin)
    for name, generation in (("vae_v1_0.pt", "1.0"), ("vae_head.pt", "1.5")):
        golden = torch.load(goldens / name, weights_only=True)
        vae = instantiate(tiny_first_stage_config(ckpt_path=str(tmp_path / "vae"), generation=generation))
        latents = golden["z13"] if generation == "1.0" else golden["z22"]
        decoded = golden["decoded13"] if generation == "1.0" else golden["decoded22"]
        assert (vae.decode(latents) - decoded).abs().max().item() <= tolerance
        assert (vae.encode_moments(golden["video9"]) - golden["moments9"]).abs().max().item() <= tolerance


@pytest.fixture(scope="module")
def tiny_copy(tmp_path_factory):
    """A diffusers copy of test-tiny."""
    folder = tmp_path_factory.mktemp("tiny-diffusers") / "model"
    return save_diffusers_copy(cogvid.load("test-tiny"), folder)


def test_a_registry_model_runs_from_a_diffusers_copy_under_the_weights_root(tiny_copy, tmp_path, monkeypatch):
    import shutil

    import yaml

    from cogvid.registry import get_model, load_registry

    tiny = get_model("test-tiny")
    noise = torch.randn((1, 3, 16, 6, 8), generator=torch.Generator().manual_seed(0))
    expected = cogvid.load("test-tiny").generate("a cat", num_frames=9, steps=2, seed=1, latents=noise)
    registry = {"models": {"tiny-hub": {
        "task": "t2v", "configs": [str(p) for p in tiny.config_files()], "height": 48, "width": 64, "frames": 17, "fps": 8,
        "dtype": "fp32", "folder": "tiny-hub", "weights": dict(tiny.weights), "hub": {"diffusers": "cogvid-tests/tiny"},
    }}}
    user = tmp_path / "models.yaml"
    user.write_text(yaml.safe_dump(registry))
    monkeypatch.setenv("COGVID_MODELS", str(user))
    root = tmp_path / "weights"
    entry = load_registry()["tiny-hub"]
    assert not entry.weights_found(root)
    shutil.copytree(tiny_copy, root / "tiny-hub-diffusers")
    summary = entry.summary(root)
    assert summary["layout"] == "diffusers" and summary["weights_found"]
    assert summary["model_dir"] == str(root / "tiny-hub-diffusers")
    assert summary["pull"] == ["cogvid models pull tiny-hub"]
    ours = cogvid.load("tiny-hub", weights=root).generate("a cat", num_frames=9, steps=2, seed=1, latents=noise)
    assert np.array_equal(ours.frames, expected.frames)


def _edit_transformer(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_strict_keys_name_the_diffusers_tensors(tiny_copy, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_copy, broken)
    _edit_transformer(broken, lambda t: (t.pop("transformer_blocks.1.attn1.to_k.weight"), t.update(extra=torch.zeros(2))))
    with pytest.raises(CheckpointError) as error:
        cogvid.load(str(broken))
    message = str(error.value)
    assert "transformer_blocks.1.attn1.to_k.weight" in message and "extra" in message
    assert "1 missing" in message and "1 unexpected" in message
    assert "CogVideoXTransformer3DModel with 2 layers" in message  # what the folder looks like


def test_folder_mistakes_are_named(tiny_copy, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_copy, folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "norm_eps": 1e-3}))
    with pytest.raises(ConfigError, match="norm_eps"):
        cogvid.load(str(folder))
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "transformer" / "diffusion_pytorch_model-00001-of-00002.safetensors")
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors", "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}))
    with pytest.raises(MissingFileError, match="00002-of-00002"):
        cogvid.load(str(folder))
    with pytest.raises(MissingFileError, match="does not exist"):
        cogvid.load(str(tmp_path / "nowhere" / "model"))


def test_sat_folder_without_yamls_needs_a_released_size(tmp_path):
    from cogvid.registry import get_model

    folder = get_model("test-tiny").model_dir()  # transformer/, vae/3d-vae.pt, t5-v1_1-xxl/ and no YAML
    with pytest.raises(UsageError, match="of no released size, and no YAMLs"):
        cogvid.load(str(folder))


def test_dry_run_of_a_diffusers_folder_loads_nothing(tiny_copy):
    import subprocess
    import sys

    code = ("import sys, json; from typer.testing import CliRunner; from cogvid.cli.app import app; "
            f"r = CliRunner().invoke(app, ['t2v', 'a cat', '-m', {str(tiny_copy)!r}, '--dry-run', '--json']); "
            "print(r.output); assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(result.stdout.strip().splitlines()[0])
    assert record["model"] == str(tiny_copy) and all(part["found"] for part in record["weights"])
    assert [part["part"] for part in record["weights"]] == ["transformer", "vae", "t5", "tokenizer"]
