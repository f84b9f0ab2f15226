"""Reading row chunks of safetensors tensors into place: every path (positioned reads, the seek-and-read
fallback, casts, many threads at once) gives exactly the stored numbers; a truncated file is refused."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from cogvid import safetensors_io
from cogvid.errors import CheckpointError
from cogvid.safetensors_io import SafetensorsFolder, save_folder


@pytest.fixture()
def folder(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(12, 5, generator=generator).half() for i in range(6)}
    save_folder(tmp_path, tensors, "model", max_shard_bytes=400)  # several shards and an index
    return tmp_path, tensors


@pytest.mark.parametrize("preadv", [True, False], ids=["preadv", "seek-and-read"])
def test_row_chunks_read_into_place_exactly(folder, monkeypatch, preadv):
    path, tensors = folder
    monkeypatch.setattr(safetensors_io, "_PREADV", preadv and safetensors_io._PREADV)
    with SafetensorsFolder(path, "model") as files:
        assert len(files.files) > 1
        files.prefetch()
        for name, tensor in tensors.items():
            for index in range(3):
                out = torch.empty(4, 5, dtype=torch.float16)
                files.read_rows_into(name, out, index, 3)
                assert torch.equal(out, tensor[4 * index : 4 * index + 4])
            cast = torch.empty(12, 5, dtype=torch.float32)
            files.read_rows_into(name, cast)
            assert torch.equal(cast, tensor.float())


def test_many_threads_reading_one_file_at_once_get_their_own_rows(folder):
    path, tensors = folder
    outs = {name: torch.empty(12, 5, dtype=torch.float16) for name in tensors}
    with SafetensorsFolder(path, "model") as files:
        threads = [
            threading.Thread(target=files.read_rows_into, args=(name, outs[name][2 * k : 2 * k + 2], k, 6))
            for name in tensors for k in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(torch.equal(outs[name], tensors[name]) for name in tensors)


def test_a_truncated_file_is_refused(tmp_path):
    save_folder(tmp_path, {"w": torch.ones(64, 64)}, "model")
    file = tmp_path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        SafetensorsFolder(tmp_path, "model")


def test_mapped_row_chunks_are_the_stored_rows(folder):
    path, tensors = folder
    with SafetensorsFolder(path, "model") as files:
        for name, tensor in tensors.items():
            assert [files.mapped_rows(name, k, 3).tolist() for k in range(3)] == [tensor[4 * k : 4 * k + 4].tolist() for k in range(3)]
        with pytest.raises(CheckpointError, match="not divisible into 5 parts"):
            files.mapped_rows("t0", 0, 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["as-stored", "cast"])
def test_fused_tensors_assembled_off_the_host_equal_those_read_into_place(tmp_path, monkeypatch, dtype):
    """Off the CPU, q/k/v and the AdaLN halves are copied to the device from the mapped file instead of read
    into host memory: forced here on the CPU, both paths give the same state, bit for bit."""
    from omegaconf import OmegaConf

    from cogvid import diffusers_weights
    from cogvid.diffusers_weights import dit_to_diffusers, read_dit
    from cogvid.dit.model import build_dit

    node = OmegaConf.load(Path(__file__).resolve().parents[2] / "configs" / "models" / "cogvideox_5b.yaml").model.network_config
    node = OmegaConf.merge(node, {"params": {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "time_embed_dim": 32,
                                             "modules": {"patch_embed_config": {"params": {"text_hidden_size": 16}}}}})
    model = build_dit(node, dtype=torch.float16, device="meta")
    optional = model.optional_state_keys()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in optional}
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=generator).half() for k, shape in expected.items()}
    save_folder(tmp_path, dit_to_diffusers(state), "diffusion_pytorch_model", max_shard_bytes=2**16)
    kwargs = {"what": "DiT", "dtype": dtype, "device": torch.device("cpu")}
    in_place = read_dit(tmp_path, expected, **kwargs)
    monkeypatch.setattr(diffusers_weights, "reads_in_place", lambda device: False)
    copied = read_dit(tmp_path, expected, **kwargs)
    assert in_place.keys() == copied.keys() == state.keys()
    for key, value in state.items():
        assert in_place[key].dtype == copied[key].dtype == dtype
        assert torch.equal(in_place[key], value.to(dtype)) and torch.equal(copied[key], value.to(dtype)), key
