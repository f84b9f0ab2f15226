"""Classifier-free guidance: batching of the conditional and unconditional inputs, and their mix.

``prepare_inputs`` doubles the batch with the **unconditional half first**; ``__call__`` mixes the
two halves of the denoised (x0) batch: ``uncond + scale * (cond - uncond)`` (REFERENCE §5.3).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cogvid.errors import ConfigError, UsageError

# Condition keys that differ between the two halves and are concatenated (uncond first).
BATCHED_KEYS = ("vector", "crossattn", "concat")

_THRESHOLDING = "sgm.modules.diffusionmodules.sampling_utils."


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return bool(a == b)


def _mix(uncond: torch.Tensor, cond: torch.Tensor, scale: Any, clamp: bool) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        scale = scale.reshape(scale.shape + (1,) * (cond.ndim - scale.ndim))  # (B,) -> (B, 1, ..., 1)
    result = uncond + scale * (cond - uncond)
    return result.clamp(-1.0, 1.0) if clamp else result


def _static_clamp(dyn_thresh_config: Any) -> bool:
    """Whether the thresholding config asks for the ±1 clamp; None/NoDynamicThresholding mean no."""
    if dyn_thresh_config is None:
        return False
    target = dyn_thresh_config.get("target") if hasattr(dyn_thresh_config, "get") else None
    if target == _THRESHOLDING + "NoDynamicThresholding":
        return False
    if target == _THRESHOLDING + "StaticThresholding":
        return True
    raise ConfigError(
        f"guider dyn_thresh_config: unsupported thresholding {target!r}",
        hint="remove dyn_thresh_config (no CogVideoX config uses thresholding) or use StaticThresholding",
    )


class VanillaCFG:
    """Classifier-free guidance with a fixed scale."""

    has_uncond = True

    def __init__(self, scale: float, dyn_thresh_config: Any = None) -> None:
        self.scale = scale
        self.clamp = _static_clamp(dyn_thresh_config)

    def scale_at(self, step_index: int | None) -> float:
        """The guidance scale used at ``step_index`` (constant here)."""
        return self.scale

    def __call__(self, x: torch.Tensor, sigma: Any, step_index: int | None = None, scale: Any = None) -> torch.Tensor:
        """Mix the (uncond, cond) halves of ``x``; an explicit ``scale`` replaces the configured one."""
        x_u, x_c = x.chunk(2)  # (2B, ...) -> 2 x (B, ...)
        return _mix(x_u, x_c, self.scale_at(step_index) if scale is None else scale, self.clamp)

    def prepare_inputs(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], uc: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Doubled batch ``[uncond; cond]`` for x, sigma and the batched condition keys."""
        c_out: dict[str, Any] = {}
        for key in cond:
            if key not in uc:
                raise UsageError(f"the unconditional input has no {key!r}, which the conditional input has")
            if key in BATCHED_KEYS:
                c_out[key] = torch.cat((uc[key], cond[key]), 0)  # 2 x (B, ...) -> (2B, ...)
            elif _same(cond[key], uc[key]):
                c_out[key] = cond[key]
            else:
                raise UsageError(
                    f"condition {key!r} differs between the conditional and unconditional inputs",
                    hint=f"only {', '.join(BATCHED_KEYS)} may differ; other keys are passed once",
                )
        return torch.cat([x] * 2), torch.cat([sigma] * 2), c_out


def dynamic_cfg_scale(scale: float, exp: float, num_steps: int, step_index: float) -> float:
    """``1 + scale * (1 - cos(pi * (step_index / num_steps) ** exp)) / 2`` in Python floats."""
    base = step_index / num_steps
    if base < 0 and float(exp) != int(exp):
        raise ConfigError(
            f"DynamicCFG exp {exp} is not a whole number, but the schedule raises a negative base to it",
            hint="use a whole exponent (the CogVideoX configs use exp: 5)",
        )
    return 1 + scale * (1 - math.cos(math.pi * base**exp)) / 2


class DynamicCFG(VanillaCFG):
    """CFG whose scale follows a cosine schedule of ``step_index`` (``sampler steps - DDPM timestep``).

    The index is built from the DDPM timestep (999, 979, ...), not the loop counter, which makes the
    schedule erratic; this is the original behaviour and is kept. An explicit ``scale`` argument is
    ignored, as in the original.
    """

    def __init__(self, scale: float, exp: float, num_steps: int, dyn_thresh_config: Any = None) -> None:
        super().__init__(scale, dyn_thresh_config)
        self.exp = exp
        self.num_steps = num_steps

    def scale_at(self, step_index: int | None) -> float:
        if step_index is None:
            raise ConfigError(
                "DynamicCFG needs the DDPM timestep of each step, which this sampler's discretization lacks",
                hint="use a DDPM discretization (ZeroSNRDDPMDiscretization) or VanillaCFG",
            )
        return dynamic_cfg_scale(self.scale, self.exp, self.num_steps, step_index)

    def __call__(self, x: torch.Tensor, sigma: Any, step_index: int | None = None, scale: Any = None) -> torch.Tensor:
        x_u, x_c = x.chunk(2)  # (2B, ...) -> 2 x (B, ...)
        return _mix(x_u, x_c, self.scale_at(step_index), self.clamp)


class IdentityGuider:
    """No guidance: the conditional input only, batch not doubled."""

    has_uncond = False

    def __call__(self, x: torch.Tensor, sigma: Any, step_index: int | None = None, scale: Any = None) -> torch.Tensor:
        return x

    def prepare_inputs(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, Any], uc: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        return x, sigma, dict(cond)
