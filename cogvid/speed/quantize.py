"""torchao quantization of the DiT's linear layers (and optionally T5's), in place, layer by layer.

Each selected layer's weight is replaced by its quantized form as soon as that layer is converted,
so the full-precision copy goes away layer by layer: quantizing a loaded model never holds two full
copies of it. Modes (:data:`cogvid.speed.options.QUANTIZE_MODES`): ``int8wo`` int8 weights,
``int8dq`` int8 weights and dynamically quantized int8 activations, ``fp8wo`` / ``fp8dq`` the same
with float8 (per-row scales; CUDA, compute capability 8.9+).

Which DiT layers: every linear of the transformer layers (qkv, output, MLP), the AdaLN modulations
and the text projection, i.e. nearly all weights; the small first and last layers (patch and time
embeddings, the final projection) stay in the model dtype, as is usual for quantized diffusion models.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from cogvid.errors import UsageError

#: DiT module names (prefixes) whose linear layers are quantized.
DIT_PREFIXES = ("transformer.layers.", "mixins.adaln_layer.adaLN_modulations.", "mixins.patch_embed.text_proj",
                "mixins.final_layer.adaLN_modulation.")
_LINEAR_KINDS = ("Linear", "ColumnParallelLinear", "RowParallelLinear")


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """torchao logs a warning for each prebuilt kernel that does not match this torch; none is needed here."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def import_torchao_quietly() -> None:
    """Import torchao, if installed, without its warnings (transformers imports it too, loudly, when
    it loads T5 and torchao is installed)."""
    import importlib.util
    import sys

    if "torchao" in sys.modules or importlib.util.find_spec("torchao") is None:
        return
    with _quiet_import(), contextlib.suppress(Exception):
        import torchao.quantization  # noqa: F401
        import torchao.prototype.safetensors.safetensors_support  # noqa: F401  (what transformers imports)


def torchao_config(mode: str) -> Any:
    """The torchao config object of ``mode``."""
    try:
        with _quiet_import():
            import torchao.quantization as ao
    except ImportError as e:
        raise UsageError(f"--quantize {mode} needs the torchao package: {e}", hint='pip install "cogvid[speed]"') from e
    if mode == "int8wo":
        return ao.Int8WeightOnlyConfig()
    if mode == "int8dq":
        return ao.Int8DynamicActivationInt8WeightConfig()
    if mode == "fp8wo":
        return ao.Float8WeightOnlyConfig()
    if mode == "fp8dq":
        return ao.Float8DynamicActivationFloat8WeightConfig(granularity=ao.PerRow())
    raise UsageError(f"unknown quantization {mode!r}")


def _is_linear(module: nn.Module) -> bool:
    return type(module).__name__ in _LINEAR_KINDS and isinstance(getattr(module, "weight", None), torch.Tensor)


def dit_layer_names(network: nn.Module) -> list[str]:
    """The names of the DiT's linear layers that :func:`quantize_dit_` converts."""
    return [name for name, module in network.named_modules() if _is_linear(module) and name.startswith(DIT_PREFIXES)]


def quantize_modules_(model: nn.Module, names: list[str], mode: str, observe: Any = None) -> int:
    """Quantize the linear layers ``names`` of ``model`` with torchao ``mode``, one at a time; returns how many.

    ``observe(name)``, when given, is called before each layer is converted (tests watch memory with it).
    """
    config = torchao_config(mode)
    from torchao.quantization import quantize_
    for name in names:
        if observe is not None:
            observe(name)
        module = model.get_submodule(name)
        quantize_(module, config, filter_fn=lambda m, fqn, target=module: m is target)
    return len(names)


def quantize_dit_(network: nn.Module, mode: str, observe: Any = None) -> int:
    """Quantize the DiT's large linear layers in place (see the module docstring)."""
    return quantize_modules_(network, dit_layer_names(network), mode, observe)


def quantize_text_encoder_(encoder: nn.Module, mode: str) -> int:
    """Quantize every linear layer of a T5 encoder in place."""
    names = [name for name, module in encoder.named_modules() if isinstance(module, nn.Linear)]
    return quantize_modules_(encoder, names, mode)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds, counting the inner tensors of torchao's quantized tensor subclasses."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) is not torch.Tensor and type(tensor) is not nn.Parameter:
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def module_bytes(module: nn.Module, buffers: bool = True) -> int:
    """Bytes of a module's parameters and (unless ``buffers=False``) buffers, each tensor once."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *(module.buffers() if buffers else ())]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor_bytes(tensor)
    return total


__all__ = ["DIT_PREFIXES", "dit_layer_names", "module_bytes", "quantize_dit_", "quantize_modules_", "quantize_text_encoder_", "tensor_bytes", "torchao_config"]
