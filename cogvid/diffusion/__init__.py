"""Diffusion parts: discretizations, denoiser + scalings, guiders and samplers (the SGM split).

This module itself imports neither torch nor OmegaConf (the CLI lists sampler names without them): the classes live in
``cogvid.diffusion.{discretization, denoiser, scalings, guiders, samplers}``.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from cogvid.errors import ConfigError, UsageError, choice_hint

if TYPE_CHECKING:
    from omegaconf import DictConfig

_SAMPLING = "sgm.modules.diffusionmodules.sampling."

#: Short sampler name (``--sampler``) -> original dotted target.
SAMPLER_NAMES: dict[str, str] = {
    "vpsde-dpmpp2m": _SAMPLING + "VPSDEDPMPP2MSampler",
    "vpode-dpmpp2m": _SAMPLING + "VPODEDPMPP2MSampler",
    "ddim": _SAMPLING + "VideoDDIMSampler",
    "euler-edm": _SAMPLING + "EulerEDMSampler",
    "heun-edm": _SAMPLING + "HeunEDMSampler",
    "euler-ancestral": _SAMPLING + "EulerAncestralSampler",
    "dpmpp2s-ancestral": _SAMPLING + "DPMPP2SAncestralSampler",
    "dpmpp2m": _SAMPLING + "DPMPP2MSampler",
    "sde-dpmpp2m": _SAMPLING + "SDEDPMPP2MSampler",
    "lms": _SAMPLING + "LinearMultistepSampler",
}

# Parameters every sampler takes, and those particular to each class (kept torch-free here; a
# test checks them against the constructors).
_BASE_PARAMS = ("discretization_config", "num_steps", "guider_config", "verbose", "device")
_EXTRA_PARAMS: dict[str, tuple[str, ...]] = {
    "VPSDEDPMPP2MSampler": ("fixed_frames", "sdedit"),
    "VPODEDPMPP2MSampler": ("fixed_frames", "sdedit"),
    "VideoDDIMSampler": ("fixed_frames", "sdedit"),
    "EulerEDMSampler": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "HeunEDMSampler": ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    "EulerAncestralSampler": ("eta", "s_noise"),
    "DPMPP2SAncestralSampler": ("eta", "s_noise"),
    "DPMPP2MSampler": (),
    "SDEDPMPP2MSampler": (),
    "LinearMultistepSampler": ("order",),
}

_IDENTITY_GUIDER = "sgm.modules.diffusionmodules.guiders.IdentityGuider"
MAX_STEPS = 1000


def check_num_steps(num_steps: Any, maximum: int) -> int:
    """``num_steps`` as an int in ``1..maximum``, or a ConfigError that says what is allowed."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise ConfigError(
            f"number of sampling steps must be a whole number, found {num_steps!r}",
            hint="for example --steps 50",
        )
    if not 1 <= int(num_steps) <= maximum:
        raise ConfigError(
            f"number of sampling steps must be between 1 and {maximum}, found {num_steps}",
            hint="CogVideoX models are sampled with 50 steps; fewer are faster and blurrier",
        )
    return int(num_steps)


def sampler_params(target: str) -> tuple[str, ...]:
    """The constructor parameters of the sampler registered as ``target``."""
    return _BASE_PARAMS + _EXTRA_PARAMS[target.rsplit(".", 1)[-1]]


def _unknown_sampler(name: str) -> ConfigError:
    return ConfigError(f"unknown sampler {name!r}", hint=choice_hint(name, SAMPLER_NAMES, "known samplers"))


def sampler_config_with(name: str, base_sampler_config: Any) -> DictConfig:
    """A sampler node for ``name`` that keeps the model's discretization, guider and num_steps.

    Parameters of the base node that the new class does not take are dropped.
    """
    from omegaconf import OmegaConf

    if name in SAMPLER_NAMES:
        target = SAMPLER_NAMES[name]
    elif name in SAMPLER_NAMES.values():
        target = name
    else:
        raise _unknown_sampler(name)
    base = OmegaConf.to_container(base_sampler_config, resolve=True) if base_sampler_config is not None else {}
    if not isinstance(base, dict):
        raise ConfigError(f"sampler_config: expected a mapping, found {type(base).__name__}")
    params = base.get("params") or {}
    if "discretization_config" not in params:
        raise ConfigError(
            "sampler_config.params has no discretization_config to keep",
            hint="the model YAML's sampler_config must set params.discretization_config",
        )
    accepted = sampler_params(target)
    kept = {key: value for key, value in params.items() if key in accepted}
    return OmegaConf.create({"target": target, "params": kept})


def _check_guidance(guidance: Any) -> float:
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise UsageError(f"guidance scale must be a number, found {guidance!r}", hint="for example --guidance 6")
    if guidance < 0:
        raise UsageError(
            f"guidance scale must not be negative, found {guidance}",
            hint="1 means no guidance; CogVideoX models use 6",
        )
    return float(guidance)


def sampler_config_for(sampler_config: Any, num_steps: int | None = None, guidance: float | None = None) -> DictConfig:
    """``sampler_config`` with the step count and the guidance scale replaced (validated).

    ``num_steps`` also replaces the guider's own ``num_steps`` (DynamicCFG's schedule length), as
    diffusers does; ``guidance`` replaces the guider's ``scale``.
    """
    from omegaconf import OmegaConf

    node = OmegaConf.create(OmegaConf.to_container(sampler_config, resolve=True))
    if "params" not in node or node.params is None:
        node.params = {}
    guider = node.params.get("guider_config")
    if num_steps is not None:
        node.params.num_steps = check_num_steps(num_steps, MAX_STEPS)
        if guider is not None and "num_steps" in (guider.get("params") or {}):
            guider.params.num_steps = node.params.num_steps
    if guidance is not None:
        scale = _check_guidance(guidance)
        if guider is None or guider.get("target") == _IDENTITY_GUIDER:
            raise ConfigError(
                "this model's sampler has no unconditional input, so a guidance scale cannot apply",
                hint="drop --guidance, or give the sampler a guider_config (VanillaCFG or DynamicCFG)",
            )
        if guider.get("params") is None:
            guider.params = {}
        guider.params.scale = scale
    return node


def build_sampler(sampler_config: Any, num_steps: int | None = None, guidance: float | None = None) -> Any:
    """Build the sampler of ``sampler_config``, optionally with another step count or guidance scale."""
    from cogvid.config import instantiate

    return instantiate(sampler_config_for(sampler_config, num_steps, guidance))


__all__ = ["MAX_STEPS", "SAMPLER_NAMES", "build_sampler", "check_num_steps", "sampler_config_for", "sampler_config_with", "sampler_params"]
