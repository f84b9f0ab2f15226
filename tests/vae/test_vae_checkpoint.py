"""Loading ``3d-vae.pt``: layout, strict keys and shapes, clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from cogvid.config import instantiate
from cogvid.errors import CheckpointError, MissingFileError
from fixtures.tiny_vae import tiny_first_stage_config


def _build(path) -> object:
    return instantiate(tiny_first_stage_config(ckpt_path=str(path)))


def test_loads_every_tensor_and_drops_loss_keys(tiny_vae_file):
    path, state = tiny_vae_file
    assert any(k.startswith("loss") for k in torch.load(path, weights_only=True)["state_dict"])
    rng_before = torch.get_rng_state()
    vae = _build(path)
    assert torch.equal(torch.get_rng_state(), rng_before)  # built on meta: no random init
    loaded = vae.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="not found") as info:
        _build(tmp_path / "vae" / "3d-vae.pt")
    assert not isinstance(info.value, CheckpointError)
    assert info.value.hint


def test_corrupt_file(tmp_path, tiny_vae_file):
    path = tmp_path / "3d-vae.pt"
    path.write_bytes(tiny_vae_file[0].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read"):
        _build(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        _build(path)


def test_file_without_state_dict(tmp_path, tiny_vae_file):
    path = tmp_path / "3d-vae.pt"
    torch.save(tiny_vae_file[1], path)  # the tensors, but not under "state_dict"
    with pytest.raises(CheckpointError, match="state_dict"):
        _build(path)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_key_and_shape_mismatches(tmp_path, tiny_vae_file, damage):
    state = dict(tiny_vae_file[1])
    if damage == "missing":
        del state["decoder.conv_out.conv.bias"]
    elif damage == "unexpected":
        state["decoder.up.0.attn.0.q.weight"] = torch.zeros(1)
    else:
        state["encoder.conv_in.conv.weight"] = torch.zeros(8, 3, 3, 3, 3)
    path = tmp_path / "3d-vae.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        _build(path)
    message = str(info.value)
    assert {"missing": "decoder.conv_out.conv.bias", "unexpected": "attn.0.q", "shape": "encoder.conv_in"}[damage] in message
