"""CogVideoX's alpha-space samplers (a = sqrt(alpha_cumprod)): VideoDDIM, VP-SDE and VP-ODE DPM-Solver++(2M).

Loop i = 0..N-1 walks a[i] -> a[i+1] over the subset-rescaled ZeroSNR levels (a[0] = 0 at t = 999,
a[N] = 1 appended), passing the DDPM timestep ``timesteps[i]`` (999, 979, ..., 19 for N = 50) to
the model as ``idx`` (REFERENCE §5.4).
"""

from __future__ import annotations

from typing import Any

import torch

from cogvid.diffusion.sampler_base import BaseDiffusionSampler, SamplingRun, per_sample
from cogvid.errors import ConfigError


def half_log_snr(alpha: torch.Tensor) -> torch.Tensor:
    """``lambda(a) = ln(a / sqrt(1 - a^2))`` (-inf at a = 0, +inf at a = 1)."""
    alpha_cumprod = alpha**2
    return ((alpha_cumprod / (1 - alpha_cumprod)) ** 0.5).log()


class VideoDDIMSampler(BaseDiffusionSampler):
    """Deterministic DDIM in alpha space: ``x <- sqrt((1-a'^2)/(1-a^2)) x + (a' - a sqrt(...)) D``.

    ``fixed_frames > 0`` re-imposes the first latent frames of the input at every step (noised to
    the current level when ``sdedit``), as the original's VP-SDE sampler does.
    """

    level_kind = "timestep"

    def __init__(self, fixed_frames: int = 0, sdedit: bool = False, **base: Any) -> None:
        super().__init__(**base)
        if not self.alpha_space:
            raise ConfigError(
                f"{type(self).__name__} needs a sqrt(alpha_cumprod) discretization (ZeroSNRDDPMDiscretization), "
                f"not {type(self.discretization).__name__}",
                hint="use sampler_config.params.discretization_config from the model's own YAML",
            )
        self.fixed_frames = fixed_frames
        self.sdedit = sdedit

    def schedule(self, num_steps: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, list[int]]:
        """``num_steps + 1`` levels (0 ... ~0.99, 1) and the ``num_steps`` timesteps in loop order."""
        alphas, timesteps = self.discretization(num_steps, device=device, return_idx=True, do_append_zero=False)
        alphas = torch.cat([alphas, alphas.new_ones([1])]).to(dtype)
        return alphas, [int(t) for t in reversed(list(timesteps))]

    def loop(self, run: SamplingRun, x: torch.Tensor) -> torch.Tensor:
        """The alpha-space loop; the callback gets the DDPM timestep as level."""
        alphas, timesteps = self.schedule(run.num_steps, x.device, run.dtype)
        s_in = x.new_ones([x.shape[0]])
        prefix = x[:, : self.fixed_frames] if self.fixed_frames > 0 else None  # (B, F, ...) first frames
        old_denoised: torch.Tensor | None = None
        for i in range(run.num_steps):
            if prefix is not None:
                if self.sdedit:
                    noise = run.noise(prefix)
                    prefix_now = alphas[i] * prefix + noise * per_sample(s_in * (1 - alphas[i] ** 2) ** 0.5, prefix)
                else:
                    prefix_now = prefix
                x = torch.cat([prefix_now, x[:, self.fixed_frames :]], dim=1)  # frames: F + (T - F)
            previous = None if i == 0 else s_in * alphas[i - 1]
            x, old_denoised = self.step(
                run, x, old_denoised, previous, s_in * alphas[i], s_in * alphas[i + 1], run.num_steps - i, timesteps[i]
            )
            run.step_done(i, timesteps[i])
        if prefix is not None:
            x = torch.cat([prefix, x[:, self.fixed_frames :]], dim=1)
        return x

    def step(
        self,
        run: SamplingRun,
        x: torch.Tensor,
        old_denoised: torch.Tensor | None,
        previous: torch.Tensor | None,
        alpha: torch.Tensor,
        next_alpha: torch.Tensor,
        idx: int,
        timestep: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update; returns the new x and this step's x0 prediction."""
        denoised = run.denoise(x, alpha, timestep)
        a_t = ((1 - next_alpha**2) / (1 - alpha**2)) ** 0.5
        b_t = next_alpha - alpha * a_t
        return per_sample(a_t, x) * x + per_sample(b_t, x) * denoised, denoised


class VPSDEDPMPP2MSampler(VideoDDIMSampler):
    """DPM-Solver++(2M) for the VP SDE (the sampler CogVideoX configs use).

    Two fresh noise draws per step (one on the first, none on the last, which returns D).
    """

    sde = True

    def step(
        self,
        run: SamplingRun,
        x: torch.Tensor,
        old_denoised: torch.Tensor | None,
        previous: torch.Tensor | None,
        alpha: torch.Tensor,
        next_alpha: torch.Tensor,
        idx: int,
        timestep: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        denoised = run.denoise(x, alpha, timestep)
        if idx == 1:
            return denoised, denoised
        lamb = half_log_snr(alpha)
        h = half_log_snr(next_alpha) - lamb
        ratio = ((1 - next_alpha**2) / (1 - alpha**2)) ** 0.5
        if self.sde:
            mult1 = per_sample(ratio * (-h).exp(), x)
            mult2 = per_sample((-2 * h).expm1() * next_alpha, x)
            noise_coef = per_sample((1 - next_alpha**2) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5, x)
            x_standard = mult1 * x - mult2 * denoised + noise_coef * run.noise(x)
        else:
            mult1 = per_sample(ratio, x)
            mult2 = per_sample((-h).expm1() * next_alpha, x)
            x_standard = mult1 * x - mult2 * denoised
        if old_denoised is None or torch.sum(next_alpha) < 1e-14:
            return x_standard, denoised
        assert previous is not None
        r = per_sample((lamb - half_log_snr(previous)) / h, x)  # h_last / h (inf on step 1: a_prev = 0)
        denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x_advanced = mult1 * x - mult2 * denoised_d
        if self.sde:
            x_advanced = x_advanced + noise_coef * run.noise(x)
        return x_advanced, denoised


class VPODEDPMPP2MSampler(VPSDEDPMPP2MSampler):
    """Deterministic DPM-Solver++(2M) for the VP ODE.

    Unlike the original, it forwards ``scale`` and ``ofs`` like the SDE variant (the original
    drops them, so 1.5-I2V models could not run with it).
    """

    sde = False
