"""torchrun helpers: which rank this process is, its device, and gathering small results on rank 0.

Nothing here runs at import time: no process group is created until :func:`ensure_process_group`
(or :func:`gather_objects`) is called, and then one default group is kept until the process exits.
torch is imported lazily.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
from collections.abc import Sequence
from typing import Any, TypeVar

from cogvid.errors import UsageError

T = TypeVar("T")

# Ranks finish their shards at different times; the gather waits this long for the slowest one.
GATHER_TIMEOUT = _dt.timedelta(hours=24)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise UsageError(
            f"environment variable {name}={value!r} is not an integer", hint="launch with torchrun, or unset it"
        ) from e


def rank_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` without it."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise UsageError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}",
            hint="launch with torchrun, or unset RANK/WORLD_SIZE/LOCAL_RANK",
        )
    return rank, world_size, local_rank


def is_distributed() -> bool:
    """True when launched with more than one process (torchrun ``--nproc_per_node N``, N > 1)."""
    return rank_info()[1] > 1


def rank_device(device: str, local_rank: int, world_size: int) -> str:
    """The device a rank runs on: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` when several ranks
    share a machine with CUDA; anything else (``cpu``, ``cuda:N``) is kept as given."""
    if world_size <= 1 or device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return device  # "auto" resolves to CPU; "cuda" fails with a clear DeviceError later
    return f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}"


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Item ``i`` goes to rank ``i % world_size`` (the original ``sample_video.py`` rule)."""
    return [item for index, item in enumerate(items) if index % world_size == rank]


def can_gather() -> bool:
    """Whether a gloo process group can be set up from the environment (torchrun sets it)."""
    if rank_info()[1] <= 1:
        return True
    if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        return False
    import torch.distributed as dist

    return dist.is_available()


def ensure_process_group(timeout: _dt.timedelta = GATHER_TIMEOUT) -> None:
    """Create the default process group from torchrun's environment unless one exists, and keep it
    until the process exits: gloo for CPU tensors and Python objects, NCCL too where CUDA is.

    One group for the whole run on purpose: a group destroyed and created again on torchrun's store
    can read the old group's stale addresses and hang.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    rank, world_size, _ = rank_info()
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout)
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` for one process.

    Uses the default process group, creating it first if needed (:func:`ensure_process_group`).
    Returns None when no group can be formed (``WORLD_SIZE`` > 1 without ``MASTER_ADDR``/``MASTER_PORT``).
    """
    if rank_info()[1] <= 1:
        return [obj]
    if not can_gather():
        return None
    import torch.distributed as dist

    ensure_process_group()
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


__all__ = ["GATHER_TIMEOUT", "can_gather", "ensure_process_group", "gather_objects", "is_distributed", "rank_device", "rank_info", "shard"]
