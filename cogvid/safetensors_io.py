"""Safetensors model files (one file, or shards with a ``*.safetensors.index.json``): read and write.

Reading never copies a tensor that is used as stored: :meth:`SafetensorsFolder.mapped` returns it
memory-mapped. A tensor that must be reassembled or cast is read with plain file reads straight into
its destination (:meth:`SafetensorsFolder.read_rows_into`), so no mapped page of it stays resident:
loading a checkpoint costs about its file size in memory, not twice that.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cogvid.errors import CheckpointError, MissingFileError

MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit
MAX_INDEX_BYTES = 50 * 2**20
DEFAULT_SHARD_BYTES = 5 * 10**9  # diffusers' converter writes 5 GB shards
_PREADV = hasattr(os, "preadv")

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


@dataclass(frozen=True)
class Entry:
    """Where one tensor lies: its file, dtype, shape and byte range in the file."""

    file: Path
    dtype: torch.dtype
    shape: torch.Size
    start: int
    end: int


def weight_files(folder: Path, stem: str) -> list[Path]:
    """The safetensors files of a model folder: those listed by ``<stem>.safetensors.index.json``, else
    ``<stem>.safetensors``. MissingFileError naming what is missing otherwise."""
    index = folder / f"{stem}.safetensors.index.json"
    single = folder / f"{stem}.safetensors"
    if index.is_file():
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise CheckpointError(f"{index} is larger than {MAX_INDEX_BYTES // 2**20} MiB; not a weight index")
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"cannot read the weight index {index}: {e}", hint="download the folder again") from e
        if any(not isinstance(name, str) or "/" in name or "\\" in name or name.startswith(".") for name in names):
            raise CheckpointError(f"{index} names files outside its folder", hint="download the folder again")
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise MissingFileError(
                f"{folder} lacks {len(missing)} weight shard(s) listed in {index.name}: {', '.join(missing[:3])}",
                hint="the download is incomplete: run `cogvid models pull` again (it resumes)",
            )
        return [folder / name for name in names]
    if single.is_file():
        return [single]
    raise MissingFileError(
        f"{folder} has no {single.name} and no {index.name}",
        hint=f"a diffusers-layout part folder holds config.json and {single.name} (or shards listed in {index.name})",
    )


def read_header(path: Path) -> dict[str, Entry]:
    """The tensor table of one safetensors file (its JSON header), without reading any tensor."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is beyond the format's limit")
            header = json.loads(f.read(length).decode("utf-8"))
        size = path.stat().st_size
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}", hint="the file is corrupt or truncated; download it again") from e
    base = 8 + length
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            start, end = (base + int(offset) for offset in info["data_offsets"])
            shape = torch.Size(int(n) for n in info["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad header entry for {name!r} ({e})", hint="the file is corrupt") from e
        nbytes = shape.numel() * dtype.itemsize
        if end - start != nbytes or end > size:
            raise CheckpointError(f"{path}: tensor {name!r} does not fit the file (truncated?)", hint="download the file again")
        entries[name] = Entry(path, dtype, shape, start, end)
    return entries


class SafetensorsFolder:
    """The tensors of a model folder's safetensors files, by name (opened lazily, closed with :meth:`close`)."""

    def __init__(self, folder: Path | str, stem: str) -> None:
        self.folder = Path(folder)
        self.files = weight_files(self.folder, stem)
        self.entries: dict[str, Entry] = {}
        for file in self.files:
            for name, entry in read_header(file).items():
                if name in self.entries:
                    raise CheckpointError(f"{self.folder}: tensor {name!r} is stored twice ({self.entries[name].file.name}, {file.name})")
                self.entries[name] = entry
        self._mapped: dict[Path, Any] = {}
        self._handles: dict[Path, Any] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in all files."""
        return sum(entry.end - entry.start for entry in self.entries.values())

    def shapes(self) -> dict[str, torch.Size]:
        return {name: entry.shape for name, entry in self.entries.items()}

    def mapped(self, name: str) -> torch.Tensor:
        """The tensor as stored, memory-mapped (no copy)."""
        from safetensors import safe_open

        file = self.entries[name].file
        if file not in self._mapped:
            self._mapped[file] = safe_open(str(file), framework="pt")
        return self._mapped[file].get_tensor(name)

    def mapped_rows(self, name: str, index: int = 0, count: int = 1) -> torch.Tensor:
        """Row chunk ``index`` of ``count`` equal row chunks of tensor ``name``, memory-mapped (no copy)."""
        rows = self._rows(name, count)
        return self.mapped(name).reshape(rows, -1)[index * rows // count : (index + 1) * rows // count]

    def read_rows_into(self, name: str, out: torch.Tensor, index: int = 0, count: int = 1) -> None:
        """Copy row chunk ``index`` of ``count`` equal chunks of tensor ``name`` into ``out`` (a CPU tensor of
        that chunk's shape, any dtype), reading the bytes from the file without mapping them. Thread-safe."""
        entry = self.entries[name]
        self._rows(name, count)
        chunk = (entry.end - entry.start) // count
        direct = out.dtype == entry.dtype and out.is_contiguous() and out.device.type == "cpu"
        buffer = out if direct else torch.empty(out.shape, dtype=entry.dtype)
        if buffer.numel() * entry.dtype.itemsize != chunk:
            raise CheckpointError(f"{self.folder}: {name} chunk of {chunk} bytes does not fit a {tuple(out.shape)} tensor")
        view = memoryview(buffer.reshape(-1).view(torch.uint8).numpy())
        handle = self._handle(entry.file)
        offset = entry.start + index * chunk
        done = 0
        while done < chunk:  # positioned reads: several threads may read one file at once
            n = os.preadv(handle.fileno(), [view[done:]], offset + done) if _PREADV else self._read_at(handle, view[done:], offset + done)
            if not n:
                raise CheckpointError(f"{entry.file}: unexpected end of file reading {name}", hint="download the file again")
            done += n
        if not direct:
            out.copy_(buffer)

    def _rows(self, name: str, count: int) -> int:
        """The rows of tensor ``name`` (1 for a scalar), checked to split into ``count`` equal chunks."""
        shape = self.entries[name].shape
        rows = shape[0] if shape else 1
        if rows % count:
            raise CheckpointError(f"{self.folder}: {name} has {rows} rows, not divisible into {count} parts")
        return rows

    def prefetch(self) -> None:
        """Ask the kernel to read every file ahead, in file order (a first load from the disk, not from the
        page cache, then reads sequentially however the tensors are used); a no-op where unsupported."""
        if not hasattr(os, "posix_fadvise"):
            return
        for file in self.files:
            os.posix_fadvise(self._handle(file).fileno(), 0, 0, os.POSIX_FADV_WILLNEED)

    def _handle(self, file: Path) -> Any:
        with self._lock:
            handle = self._handles.get(file)
            if handle is None:
                handle = self._handles[file] = open(file, "rb", buffering=0)  # noqa: SIM115 (closed by close())
            return handle

    def _read_at(self, handle: Any, view: memoryview, offset: int) -> int:
        with self._lock:  # no preadv (Windows): seek and read as one step
            handle.seek(offset)
            return handle.readinto(view)

    def close(self) -> None:
        """Close the files (mapped tensors already handed out stay valid)."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._mapped.clear()

    def __enter__(self) -> SafetensorsFolder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def save_folder(folder: Path, tensors: Mapping[str, torch.Tensor], stem: str, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """Write ``tensors`` into ``folder`` (which exists) as ``<stem>.safetensors``, or as numbered shards with
    ``<stem>.safetensors.index.json`` when they exceed ``max_shard_bytes``; returns the files written."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        path = folder / f"{stem}.safetensors"
        save_file(shards[0], str(path), metadata={"format": "pt"})
        return [path]
    written, weight_map, total = [], {}, 0
    for k, shard in enumerate(shards, start=1):
        path = folder / f"{stem}-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        written.append(path)
        for name, tensor in shard.items():
            weight_map[name] = path.name
            total += tensor.numel() * tensor.element_size()
    index = folder / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n", encoding="utf-8")
    return [*written, index]
