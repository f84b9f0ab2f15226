"""SAT checkpoint I/O: interoperability with SAT's own loader/saver, strict checks, error messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.sat_roundtrip import fixed_inputs
from fixtures.tiny_dit import random_dit_state, tiny_network_config, write_tiny_dit

from cogvid.checkpoint import (
    DIT_PREFIX,
    check_keys,
    read_state_dict,
    resolve_checkpoint_file,
    save_checkpoint,
    split_engine_state,
)
from cogvid.dit import load_dit
from cogvid.errors import CheckpointError, MissingFileError

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "lora_r"), [("2b", 0), ("5b", 4)])
def test_sat_loads_cogvid_checkpoints_and_cogvid_loads_sat_checkpoints(tmp_path, variant, lora_r):
    overrides = {"lora_r": lora_r} if lora_r else {}
    write_tiny_dit(tmp_path / "cogvid", variant, seed=11, **overrides)
    out_file = tmp_path / "out.pt"
    # The same DiT code on the same machine, so bit for bit below; the child gets this process's
    # thread count (it changes how reductions are split) and inherits its kernel settings.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    subprocess.run(
        [sys.executable, str(HERE.parent / "fixtures" / "sat_roundtrip.py"), variant, str(lora_r), str(tmp_path / "cogvid"),
         str(tmp_path / "sat"), str(out_file)],
        check=True, capture_output=True, timeout=120, env=env,
    )
    outputs = torch.load(out_file, weights_only=True)
    config = tiny_network_config(variant, **overrides)
    for folder, name in ((tmp_path / "cogvid", "loaded"), (tmp_path / "sat", "saved")):
        model = load_dit(config, folder, dtype=torch.float32, device="cpu")
        with torch.no_grad():
            out = model(**fixed_inputs(model.in_channels))
        assert torch.equal(out, outputs[name])
    assert (tmp_path / "sat" / "latest").read_text().strip() == "1000"


def test_load_dit_builds_nothing_random_and_uses_the_file(tmp_path):
    state = write_tiny_dit(tmp_path / "t", "1.5-i2v", seed=2)
    model = load_dit(tiny_network_config("1.5-i2v"), tmp_path / "t", dtype=torch.bfloat16, device="cpu")
    loaded = model.state_dict()
    assert all(loaded[k].dtype == torch.bfloat16 for k in state)
    assert all(torch.equal(loaded[k], v.to(torch.bfloat16)) for k, v in state.items())
    assert not model.training
    assert torch.count_nonzero(loaded["transformer.position_embeddings.weight"]) == 0


def test_optional_keys_are_tolerated_and_recomputed(tmp_path):
    config = tiny_network_config("5b")
    reference = load_dit(config, write_folder(tmp_path / "plain", "5b", extra=False), dtype=torch.float32)
    with_extra = load_dit(config, write_folder(tmp_path / "extra", "5b", extra=True), dtype=torch.float32)
    assert torch.count_nonzero(reference.state_dict()["mixins.pos_embed.freqs_cos"]) > 0  # recomputed
    inputs = fixed_inputs(reference.in_channels)
    with torch.no_grad():  # the optional tables never change the output
        assert torch.equal(reference(**inputs), with_extra(**inputs))
    sincos = load_dit(tiny_network_config("2b"), write_folder(tmp_path / "2b", "2b", extra=False), dtype=torch.float32)
    table = sincos.state_dict()["mixins.pos_embed.pos_embedding"]
    assert table.shape == (1, 8 + 3 * 4 * 4, 128) and torch.count_nonzero(table[:, :8]) == 0
    assert torch.count_nonzero(table[:, 8:]) > 0


def write_folder(folder: Path, variant: str, *, extra: bool) -> Path:
    state = random_dit_state(variant, 4)
    module = {DIT_PREFIX + k: v for k, v in state.items()}
    if extra:  # what a v1.0 rotary checkpoint or a full-engine fine-tune file may also hold
        module[DIT_PREFIX + "mixins.pos_embed.freqs_sin"] = torch.zeros(3 * 4 * 4, 64)
        module[DIT_PREFIX + "mixins.pos_embed.freqs_cos"] = torch.zeros(3 * 4 * 4, 64)
        module[DIT_PREFIX + "transformer.position_embeddings.weight"] = torch.zeros(64, 128)
        module["conditioner.embedders.0.transformer.shared.weight"] = torch.zeros(3, 4)
        module["first_stage_model.decoder.conv_out.conv.bias"] = torch.zeros(3)
    save_checkpoint(folder, module)
    return folder


def test_full_engine_checkpoint_parts_are_exposed(tmp_path):
    write_folder(tmp_path / "t", "5b", extra=True)
    parts = split_engine_state(read_state_dict(tmp_path / "t"))
    assert list(parts["text"]) == ["embedders.0.transformer.shared.weight"]
    assert list(parts["vae"]) == ["decoder.conv_out.conv.bias"]
    assert "transformer.layers.0.attention.dense.weight" in parts["dit"]


def test_missing_and_unexpected_keys_name_the_model_the_file_looks_like(tmp_path):
    state = random_dit_state("1.5-i2v", 1)
    del state["transformer.layers.1.mlp.dense_h_to_4h.bias"]
    state["mixins.bogus.weight"] = torch.zeros(2)
    save_checkpoint(tmp_path / "t", {DIT_PREFIX + k: v for k, v in state.items()})
    with pytest.raises(CheckpointError) as error:
        load_dit(tiny_network_config("1.5-i2v"), tmp_path / "t", dtype=torch.float32)
    message = str(error.value)
    assert "1 missing key(s): transformer.layers.1.mlp.dense_h_to_4h.bias" in message
    assert "1 unexpected key(s): mixins.bogus.weight" in message
    assert "looks like a CogVideoX 1.5-style image-to-video DiT of no released size (hidden size 128, 2 layers, in-channels 8" in message


def test_wrong_model_is_reported_with_shapes_and_counts(tmp_path):
    write_tiny_dit(tmp_path / "t", "2b", seed=1)
    with pytest.raises(CheckpointError) as error:
        load_dit(tiny_network_config("5b-i2v"), tmp_path / "t", dtype=torch.float32)
    message = str(error.value)
    assert "1 missing key(s): mixins.pos_embed.pos_embedding" in message
    assert "mixins.patch_embed.proj.weight (128, 4, 2, 2) (expected (128, 8, 2, 2))" in message
    assert "looks like cogvideox-2b" not in message  # hidden 128 is not the real 2B's 1920
    assert "looks like a CogVideoX 1.0-style text-to-video DiT of no released size (hidden size 128" in message


def test_check_keys_lists_a_few_and_counts_the_rest():
    expected = {f"k{i}": (2,) for i in range(9)}
    with pytest.raises(CheckpointError, match=r"9 missing key\(s\): k0, k1, k2, k3, k4, \.\.\. \(4 more\)"):
        check_keys(expected, {}, what="VAE", source="x.pt")
    check_keys(expected, {k: torch.zeros(2) for k in expected}, what="VAE", source="x.pt")


def test_missing_folder_and_missing_latest(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist") as error:
        resolve_checkpoint_file(tmp_path / "nowhere")
    assert "latest" in error.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="no 'latest' file"):
        resolve_checkpoint_file(tmp_path / "empty")


@pytest.mark.parametrize(("latest", "message"), [("banana\n", "expected a positive iteration"), ("0", "positive"),
                                                 ("7\n", "points at iteration '7'")])
def test_bad_latest(tmp_path, latest, message):
    write_tiny_dit(tmp_path / "t", "2b", seed=1)
    (tmp_path / "t" / "latest").write_text(latest)
    with pytest.raises(MissingFileError, match=message):
        resolve_checkpoint_file(tmp_path / "t")


def test_release_folder_is_accepted(tmp_path):
    path = save_checkpoint(tmp_path / "t", {"a": torch.zeros(1)})
    (tmp_path / "t" / "release").mkdir()
    path.rename(tmp_path / "t" / "release" / path.name)
    (tmp_path / "t" / "latest").write_text("release")
    assert resolve_checkpoint_file(tmp_path / "t") == tmp_path / "t" / "release" / path.name


def test_corrupt_file(tmp_path):
    path = save_checkpoint(tmp_path / "t", {"a": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as error:
        read_state_dict(tmp_path / "t")
    assert "corrupt" in error.value.hint


def test_save_never_overwrites_and_leaves_no_temp(tmp_path):
    save_checkpoint(tmp_path / "t", {"a": torch.zeros(1)}, iteration=1)
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(tmp_path / "t", {"a": torch.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    assert torch.equal(read_state_dict(tmp_path / "t")["a"], torch.zeros(1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward_follows_the_float32_one(tmp_path, dtype):
    write_tiny_dit(tmp_path / "t", "5b", seed=3)
    inputs = fixed_inputs(4)
    outputs = {}
    for run_dtype in (torch.float32, dtype):
        model = load_dit(tiny_network_config("5b"), tmp_path / "t", dtype=run_dtype, device="cpu")
        with torch.no_grad():
            outputs[run_dtype] = model(**inputs)
    assert outputs[dtype].dtype == dtype
    error = (outputs[dtype].float() - outputs[torch.float32]).abs().max() / outputs[torch.float32].abs().max()
    assert 0 < error < 0.05
