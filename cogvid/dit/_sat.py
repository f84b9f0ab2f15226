"""The one place cogvid imports SwissArmyTransformer (``sat``), with its side effects contained.

What SAT does and what is done about it:

* Importing ``sat`` logs at INFO through its own ``sat`` logger, and pulls in libraries that log
  warnings (DeepSpeed, bitsandbytes probes). The import runs with ``logging.disable(WARNING)``
  and ``SAT_LOGLEVEL=WARNING`` set only for its duration; the global RNG states (``random``,
  numpy, torch CPU and CUDA) are saved before and restored after, and so are the caller's
  logging levels and handlers. SAT's own ``sat`` logger is left at WARNING when cogvid is the
  first to import SAT.
* ``BaseModel.__init__`` calls ``sat.arguments._simple_init``, which reseeds every global RNG
  with 1234, flips cuDNN/TF32 flags and creates a ``torch.distributed`` process group (opening
  a TCP port). :func:`sat_runtime` replaces it with a no-op while a cogvid model is built, and
  the RNG states are restored afterwards as well.
* SAT's model-parallel helpers (``sat.mpu``) need a model-parallel group. When the caller has
  not set one up (``mpu.model_parallel_is_initialized()`` is false), :func:`sat_runtime` points
  SAT's module globals ``_MODEL_PARALLEL_GROUP`` / ``_DATA_PARALLEL_GROUP`` at a private
  one-rank stand-in (it only answers ``size() == 1``; no ``torch.distributed`` group is created
  and ``torch.distributed.is_initialized()`` stays as it was) and makes
  ``sat.mpu.layers.get_model_parallel_rank`` answer 0, for the duration of a build or a forward
  call only. Afterwards both globals are ``None`` again. Nothing remains.
  When the caller did initialise SAT's model parallelism (e.g. the original pipeline),
  everything is left as they set it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def preserved_global_state() -> Iterator[None]:
    """Restore the global RNGs (random, numpy, torch CPU/CUDA) and logging configuration on exit."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32)
    manager = logging.Logger.manager
    levels = {name: logger.level for name, logger in manager.loggerDict.items() if isinstance(logger, logging.Logger)}
    handlers = {name: list(logger.handlers) for name, logger in manager.loggerDict.items() if isinstance(logger, logging.Logger)}
    root_level, root_handlers, disabled = logging.root.level, list(logging.root.handlers), manager.disable
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32 = flags
        for name, level in levels.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.handlers[:] = handlers[name]
        logging.root.setLevel(root_level)
        logging.root.handlers[:] = root_handlers
        logging.disable(disabled)


def _import_sat() -> dict[str, Any]:
    first = "sat" not in sys.modules
    previous_env = os.environ.get("SAT_LOGLEVEL")
    with preserved_global_state():
        os.environ["SAT_LOGLEVEL"] = "WARNING"
        logging.disable(logging.WARNING)
        try:
            from sat import mpu
            from sat.model.base_model import BaseMixin, BaseModel, non_conflict
            from sat.model.finetune import lora2
            from sat.mpu import layers as mpu_layers
            from sat.mpu import initialize as mpu_initialize
            from sat.ops.layernorm import LayerNorm
            from sat.transformer_defaults import HOOKS_DEFAULT
            import sat.arguments as sat_arguments
        finally:
            if previous_env is None:
                os.environ.pop("SAT_LOGLEVEL", None)
            else:
                os.environ["SAT_LOGLEVEL"] = previous_env
    if first:
        logging.getLogger("sat").setLevel(logging.WARNING)
    return dict(
        mpu=mpu,
        BaseMixin=BaseMixin,
        BaseModel=BaseModel,
        non_conflict=non_conflict,
        lora2=lora2,
        mpu_layers=mpu_layers,
        mpu_initialize=mpu_initialize,
        LayerNorm=LayerNorm,
        HOOKS_DEFAULT=HOOKS_DEFAULT,
        sat_arguments=sat_arguments,
    )


_sat = _import_sat()
mpu = _sat["mpu"]
BaseMixin = _sat["BaseMixin"]
BaseModel = _sat["BaseModel"]
non_conflict = _sat["non_conflict"]
SatLoraMixin = _sat["lora2"].LoraMixin
LoraLinear = _sat["lora2"].LoraLinear
LayerNorm = _sat["LayerNorm"]
HOOKS_DEFAULT = _sat["HOOKS_DEFAULT"]
_mpu_init = _sat["mpu_initialize"]
_mpu_layers = _sat["mpu_layers"]
_sat_arguments = _sat["sat_arguments"]


class _SingleRankGroup:
    """Stands in for a one-rank process group: all SAT asks of it at world size 1 is its size."""

    def size(self) -> int:
        return 1

    def rank(self) -> int:
        return 0


_GROUP = _SingleRankGroup()
_LOCK = threading.RLock()


def _simple_init_disabled(model_parallel_size: int = 1, seed: int = 0) -> bool:
    return False


@contextlib.contextmanager
def sat_runtime(*, building: bool = False) -> Iterator[None]:
    """Let SAT code run at model-parallel world size 1 without global side effects (see module doc).

    ``building=True`` also disables ``_simple_init`` (reseeding, process group) and restores
    the RNG/logging state afterwards.
    """
    with _LOCK:
        if _mpu_init.model_parallel_is_initialized():
            with preserved_global_state() if building else contextlib.nullcontext():
                yield
            return
        saved_init, saved_rank = _sat_arguments._simple_init, _mpu_layers.get_model_parallel_rank
        _mpu_init._MODEL_PARALLEL_GROUP = _mpu_init._DATA_PARALLEL_GROUP = _GROUP
        _mpu_layers.get_model_parallel_rank = _zero_rank
        if building:
            _sat_arguments._simple_init = _simple_init_disabled
        try:
            with preserved_global_state() if building else contextlib.nullcontext():
                yield
        finally:
            _mpu_init._MODEL_PARALLEL_GROUP = _mpu_init._DATA_PARALLEL_GROUP = None
            _mpu_layers.get_model_parallel_rank = saved_rank
            _sat_arguments._simple_init = saved_init


def _zero_rank() -> int:
    return 0
