"""What every sampler shares: construction from the original YAML params, noise, guidance, progress.

A sampler is called as the original: ``sampler(denoiser, x, cond, uc=None, num_steps=None,
scale=None, scale_emb=None, ofs=None)`` where ``denoiser(x, level, cond, **extra)`` returns the x0
prediction. On top of the original, every sampler takes keyword-only ``generator`` (all noise comes
from it) and ``callback(step, total, level)`` (called after each step; it may raise
:class:`cogvid.errors.Cancelled`, which propagates with the step finished and nothing else done).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cogvid.config import instantiate
from cogvid.diffusion.denoiser import append_dims
from cogvid.diffusion import check_num_steps
from cogvid.diffusion.guiders import IdentityGuider
from cogvid.errors import ConfigError

StepCallback = Callable[[int, int, float], None]
DenoiserFn = Callable[..., torch.Tensor]


def draw_noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped and typed like ``x`` (as ``randn_like``), drawn from ``generator``.

    The draw happens on the generator's device (use a generator on x's device to match the
    original's stream) and is moved to x's device.
    """
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return noise.to(x.device)


def fresh_generator(device: torch.device) -> torch.Generator:
    """A generator seeded from the OS, never from (or touching) the global RNG."""
    generator = torch.Generator(device=device)
    generator.seed()
    return generator


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype samplers keep their state in: float32 (as the original), float64 if x is float64."""
    return torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32


class SamplingRun:
    """State of one sampler call: inputs, guidance settings, noise source and progress callback."""

    def __init__(
        self,
        sampler: BaseDiffusionSampler,
        denoiser: DenoiserFn,
        x: torch.Tensor,
        cond: dict[str, Any],
        uc: dict[str, Any] | None,
        num_steps: int,
        scale: Any,
        scale_emb: Any,
        ofs: Any,
        generator: torch.Generator | None,
        callback: StepCallback | None,
    ) -> None:
        self.sampler = sampler
        self.denoiser = denoiser
        self.cond = cond
        self.uc = cond if uc is None else uc
        self.num_steps = num_steps
        self.scale = scale
        self.scale_emb = scale_emb
        self.extra = {} if ofs is None else {"ofs": ofs}
        self.generator = generator if generator is not None else fresh_generator(x.device)
        self.callback = callback
        self.dtype = work_dtype(x)
        # The original runs without guidance when called with a plain scale of exactly 1.
        self.unguided = scale is not None and not isinstance(scale, torch.Tensor) and scale == 1
        self.pass_idx = sampler.alpha_space

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """Fresh standard normal noise like ``x``."""
        return draw_noise(x, self.generator)

    def step_done(self, step: int, level: Any) -> None:
        """Report a finished step to the callback (which may raise Cancelled)."""
        if self.callback is not None:
            self.callback(step, self.num_steps, float(level))

    def denoise(self, x: torch.Tensor, level: torch.Tensor, timestep: int | None) -> torch.Tensor:
        """Guided x0 prediction at noise level ``level`` (B,): sigma, or sqrt(alpha_cumprod) in alpha space."""
        guider = self.sampler.guider
        extra = dict(self.extra)
        step_index = None if timestep is None else self.num_steps - timestep
        if self.unguided or not getattr(guider, "has_uncond", False):
            if self.pass_idx:
                extra["idx"] = x.new_ones([x.shape[0]]) * timestep
            if self.unguided and self.scale_emb is not None:
                extra["scale_emb"] = self.scale_emb
            x_in, level_in, c_in = (x, level, self.cond) if self.unguided else guider.prepare_inputs(x, level, self.cond, self.uc)
            return self.denoiser(x_in, level_in, c_in, **extra).to(self.dtype)
        x_in, level_in, c_in = guider.prepare_inputs(x, level, self.cond, self.uc)  # (B, ...) -> (2B, ...)
        if self.pass_idx:
            extra["idx"] = x.new_ones([x_in.shape[0]]) * timestep
        denoised = self.denoiser(x_in, level_in, c_in, **extra).to(self.dtype)
        sigma = (1 - level**2) ** 0.5 if self.sampler.alpha_space else level
        return guider(denoised, sigma, step_index=step_index, scale=self.scale)


class BaseDiffusionSampler:
    """Builds the discretization and guider; resolves steps; holds what all samplers share.

    ``level_kind`` names what the progress callback's ``level`` is: a DDPM ``"timestep"`` or a ``"sigma"``.
    """

    level_kind = "sigma"

    def __init__(
        self,
        discretization_config: Any,
        num_steps: int | None = None,
        guider_config: Any = None,
        verbose: bool = False,
        device: str | None = None,
    ) -> None:
        self.discretization = instantiate(discretization_config)
        self.guider = IdentityGuider() if guider_config is None else instantiate(guider_config)
        self.max_steps = self.discretization.num_timesteps or 10**6
        self.num_steps = None if num_steps is None else check_num_steps(num_steps, self.max_steps)
        # `verbose` and `device` are accepted for the original's YAMLs; progress goes through the
        # callback and every tensor follows the device of x.
        self.verbose = verbose
        self._tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def alpha_space(self) -> bool:
        """True when the discretization gives sqrt(alpha_cumprod) (CogVideoX's VideoScaling models)."""
        return bool(self.discretization.returns_alpha)

    def resolve_steps(self, num_steps: int | None) -> int:
        """The step count for one call: the argument, else the configured one."""
        steps = self.num_steps if num_steps is None else num_steps
        if steps is None:
            raise ConfigError(
                f"{type(self).__name__}: no number of steps (neither num_steps in the config nor an argument)",
                hint="set model.sampler_config.params.num_steps or pass --steps",
            )
        return check_num_steps(steps, self.max_steps)

    def level_table(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """The full DDPM table of levels, indexed by timestep (None for continuous schedules)."""
        total = self.discretization.num_timesteps
        if total is None:
            return None
        key = (device, dtype)
        if key not in self._tables:
            table = self.discretization(total, do_append_zero=False, flip=True)
            self._tables[key] = table.to(device=device, dtype=dtype)
        return self._tables[key]

    def nearest_timestep(self, level: torch.Tensor) -> int | None:
        """DDPM timestep whose table level is nearest to ``level[0]`` (first on ties), as DiscreteDenoiser."""
        table = self.level_table(level.device, level.dtype)
        if table is None:
            return None
        return int((level.reshape(-1)[0] - table).abs().argmin())

    def __call__(
        self,
        denoiser: DenoiserFn,
        x: torch.Tensor,
        cond: dict[str, Any],
        uc: dict[str, Any] | None = None,
        num_steps: int | None = None,
        scale: Any = None,
        scale_emb: Any = None,
        ofs: Any = None,
        *,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Sample from unit-variance noise ``x`` (B, T, C, H, W); returns the final x0 estimate.

        ``x`` is never modified (the run works on a copy in the working dtype).
        """
        steps = self.resolve_steps(num_steps)
        run = SamplingRun(self, denoiser, x, cond, uc, steps, scale, scale_emb, ofs, generator, callback)
        return self.loop(run, x.to(run.dtype, copy=True))

    def loop(self, run: SamplingRun, x: torch.Tensor) -> torch.Tensor:
        """The sampling loop of one call (``x`` already a private copy); every sampler defines it."""
        raise TypeError(f"{type(self).__name__} does not define loop()")


def per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B,) level broadcast against x: (B,) -> (B, 1, ..., 1)."""
    return append_dims(value, x.ndim)
