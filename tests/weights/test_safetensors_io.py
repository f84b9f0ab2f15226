"""Reading row chunks of safetensors tensors into place: every path (positioned reads, the seek-and-read
fallback, casts, many threads at once) gives exactly the stored numbers; a truncated file is refused."""

from __future__ import annotations

import threading

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
