"""CogVideoX transformer and VAE tensors in the diffusers layout: read them as SAT state dicts, write them from one.

Reading is strict (every tensor the model needs, nothing else, with the right shapes; errors name the
diffusers keys and what the folder looks like) and light: tensors used as stored are memory-mapped, the
fused attention and AdaLN tensors are read straight into place (:mod:`cogvid.safetensors_io`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import torch

from cogvid.checkpoint import check_keys
from cogvid.diffusers_keys import Part, dit_plan, vae_key
from cogvid.diffusers_layout import DIFFUSERS_STEM
from cogvid.safetensors_io import SafetensorsFolder

READ_THREADS = 8


def _shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, SimpleNamespace]:
    return {key: SimpleNamespace(shape=tuple(shape)) for key, shape in shapes.items()}


def diffusers_dit_shapes(plan: Mapping[str, tuple[Part, ...]], sat_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The shape of every diffusers tensor a plan reads, given the SAT tensors' shapes."""
    shapes = {}
    for key, parts in plan.items():
        shape = tuple(sat_shapes[key])
        rows = shape[0] // len(parts) if shape else 1
        for part in parts:
            shapes[part.key] = (rows * part.count, *shape[1:])
    return shapes


def describe_folder(folder: Path, files: SafetensorsFolder) -> str:
    """What a diffusers transformer folder holds, for error messages."""
    from cogvid.diffusers_layout import read_json

    try:
        config = read_json(folder / "config.json", "config")
        return (f"a diffusers {config.get('_class_name', '?')} with {config.get('num_layers', '?')} layers, "
                f"{config.get('num_attention_heads', '?')} heads of {config.get('attention_head_dim', '?')}, "
                f"in-channels {config.get('in_channels', '?')} ({len(files.entries)} tensors)")
    except Exception:  # the config is only used to describe; its own errors are reported elsewhere
        return f"{len(files.entries)} tensors"


def read_dit(
    folder: Path,
    expected: Mapping[str, tuple[int, ...]],
    *,
    what: str,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The SAT DiT state (keys of ``expected``, DiT-relative) read from a diffusers transformer folder.

    Tensors come in ``dtype`` on ``device``; on the CPU in their stored dtype they stay memory-mapped.
    Fused tensors (q, k, v; the AdaLN halves: ~1.4 GB for a 2B, ~4 GB for a 5B) are assembled where they
    are used: on the CPU read straight into place, on another device copied there from the mapped file
    (no host copy).
    """
    plan = dit_plan(expected)
    in_place = reads_in_place(device)
    with SafetensorsFolder(folder, DIFFUSERS_STEM) as files:
        check_keys(diffusers_dit_shapes(plan, expected), _shapes(files.shapes()), what=what, source=folder,
                   looks_like=describe_folder(folder, files))
        state, reads = {}, []
        for key, parts in plan.items():
            state[key] = _stored(files, parts, dtype, device)
            if state[key] is None:  # fused (q, k, v; the AdaLN halves) or cast: assembled from file reads
                state[key] = torch.empty(torch.Size(expected[key]), dtype=dtype, device=device)
                rows = state[key].shape[0] // len(parts)
                reads += [(part, state[key][j * rows : (j + 1) * rows]) for j, part in enumerate(parts)]
        # In file order: the disk reads ahead (and the kernel is asked to).
        reads.sort(key=lambda read: (files.entries[read[0].key].file, files.entries[read[0].key].start))
        files.prefetch()
        if in_place:  # in parallel: page-cache copies overlap
            with ThreadPoolExecutor(max_workers=min(READ_THREADS, os.cpu_count() or 1)) as pool:
                list(pool.map(lambda read: files.read_rows_into(read[0].key, read[1], read[0].index, read[0].count), reads))
        else:
            for part, out in reads:
                out.copy_(files.mapped_rows(part.key, part.index, part.count).view(out.shape))
        return {key: value.view(torch.Size(expected[key])).to(device=device, dtype=dtype) for key, value in state.items()}


def reads_in_place(device: torch.device) -> bool:
    """Whether fused tensors on ``device`` are read from the files straight into place (CPU memory)."""
    return device.type == "cpu"


def _stored(files: SafetensorsFolder, parts: tuple[Part, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """The tensor of a one-part plan entry straight from the file (memory-mapped on the CPU); None when it must be assembled."""
    if len(parts) != 1 or parts[0].count != 1:
        return None
    if files.entries[parts[0].key].dtype == dtype or not reads_in_place(device):
        return files.mapped(parts[0].key)  # used as stored: no copy (cast on the way to another device)
    return None


def read_vae(folder: Path, expected: Mapping[str, tuple[int, ...]], levels: int) -> dict[str, torch.Tensor]:
    """The SAT VAE state (keys of ``expected``) read, memory-mapped, from a diffusers VAE folder."""
    names = {key: vae_key(key, levels) for key in expected}
    with SafetensorsFolder(folder, DIFFUSERS_STEM) as files:
        check_keys({names[k]: shape for k, shape in expected.items()}, _shapes(files.shapes()), what="VAE", source=folder,
                   looks_like=f"a diffusers VAE with {len(files.entries)} tensors")
        return {key: files.mapped(name) for key, name in names.items()}


# --------------------------------------------------------------------------------------------
# Writing (SAT -> diffusers)


def dit_to_diffusers(state: Mapping[str, torch.Tensor], keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """diffusers' transformer tensors for a SAT DiT state (``keys``: the SAT keys to convert, default all).

    Row chunks of the fused tensors are views; only the AdaLN halves are concatenated.
    """
    plan = dit_plan(keys if keys is not None else state)
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    for key, parts in plan.items():
        for part, chunk in zip(parts, state[key].chunk(len(parts), dim=0)):
            pieces.setdefault(part.key, {})[part.index] = chunk
    return {name: chunks[0] if len(chunks) == 1 else torch.cat([chunks[i] for i in sorted(chunks)]) for name, chunks in pieces.items()}


def vae_to_diffusers(state: Mapping[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers' VAE tensors for a SAT VAE state (``loss*`` tensors dropped)."""
    return {vae_key(key, levels): value for key, value in state.items() if not key.startswith("loss")}
