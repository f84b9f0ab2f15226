"""Samplers in sigma space (``x = x0 + sigma * eps``), ported from the original ``sampling.py``.

With a sigma discretization (EDM, LegacyDDPM) they are the original algorithms. With CogVideoX's
ZeroSNR discretization (values sqrt(alpha_cumprod) = a) they run on the same model through the
exact change of variables ``sigma = sqrt(1 - a^2) / a``, ``x_t = a * x_sigma``: each evaluation
passes a = 1/sqrt(1 + sigma^2), x_t and the DDPM timestep nearest to a (the index the denoiser's
quantization picks) as ``idx``. The zero-SNR first level (a = 0, sigma = inf) is replaced by the
smallest positive level of the 1000-step table, so sampling starts from (numerically) pure noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cogvid.diffusion.sampler_base import BaseDiffusionSampler, SamplingRun, per_sample


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0) -> tuple[torch.Tensor, Any]:
    """``(sigma_down, sigma_up)`` of an ancestral step from ``sigma_from`` to ``sigma_to``."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative ``(x - D) / sigma``."""
    return (x - denoised) / per_sample(sigma, x)


def linear_multistep_coeff(order: int, sigmas: np.ndarray, i: int, j: int) -> float:
    """``int_{sigma_i}^{sigma_{i+1}}`` of the j-th Lagrange basis polynomial over the last ``order`` sigmas.

    The integrand is a polynomial of degree ``order - 1``; Gauss-Legendre with ``order`` nodes
    integrates it exactly (the original uses adaptive quadrature to the same value).
    """
    if order - 1 > i:
        raise ValueError(f"order {order} too high for step {i}")
    nodes, weights = np.polynomial.legendre.leggauss(max(order, 1))
    lo, hi = float(sigmas[i]), float(sigmas[i + 1])
    taus = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
    values = np.ones_like(taus)
    for k in range(order):
        if k != j:
            values *= (taus - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
    return float(0.5 * (hi - lo) * np.sum(weights * values))


class SigmaSampler(BaseDiffusionSampler):
    """Base of the sigma-space samplers: schedule, start noise scaling and model evaluation."""

    def sigma_schedule(self, num_steps: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``num_steps + 1`` sigmas, falling, ending with 0."""
        if not self.alpha_space:
            return self.discretization(num_steps, device=device).to(dtype)
        alphas = self.discretization(num_steps, do_append_zero=False, device=device).to(dtype)
        table = self.level_table(device, dtype)
        assert table is not None
        floor = table[table > 0].min()
        alphas = torch.maximum(alphas, floor)
        sigmas = (1 - alphas**2) ** 0.5 / alphas
        return torch.cat([sigmas, sigmas.new_zeros([1])])

    def denoise(self, run: SamplingRun, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 prediction at ``sigma`` (B,), mapped to the model's alpha space when needed."""
        if self.alpha_space:
            alpha = (1 + sigma**2) ** -0.5
            return run.denoise(x * per_sample(alpha, x), alpha, self.nearest_timestep(alpha))
        return run.denoise(x, sigma, self.nearest_timestep(sigma))

    def loop(self, run: SamplingRun, x: torch.Tensor) -> torch.Tensor:
        """Scale the unit noise to the first sigma, then walk the sigma schedule (``sample``)."""
        sigmas = self.sigma_schedule(run.num_steps, x.device, run.dtype)
        x = x * torch.sqrt(1.0 + sigmas[0] ** 2.0)
        s_in = x.new_ones([x.shape[0]])
        return self.sample(run, x, sigmas, s_in)

    def sample(self, run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} does not define sample()")


class EDMSampler(SigmaSampler):
    """Euler (or Heun) steps with optional churn (Karras et al., Algorithm 2)."""

    def __init__(
        self,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.s_churn = s_churn
        self.s_tmin = s_tmin
        self.s_tmax = s_tmax
        self.s_noise = s_noise

    def correction(
        self, run: SamplingRun, euler: torch.Tensor, x: torch.Tensor, d: torch.Tensor, dt: torch.Tensor, next_sigma: torch.Tensor
    ) -> torch.Tensor:
        return euler

    def sample(self, run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
        num_sigmas = len(sigmas)
        for i in range(num_sigmas - 1):
            gamma = min(self.s_churn / (num_sigmas - 1), 2**0.5 - 1) if self.s_tmin <= sigmas[i] <= self.s_tmax else 0.0
            sigma, next_sigma = s_in * sigmas[i], s_in * sigmas[i + 1]
            sigma_hat = sigma * (gamma + 1.0)
            if gamma > 0:
                eps = run.noise(x) * self.s_noise
                x = x + eps * per_sample(sigma_hat**2 - sigma**2, x) ** 0.5
            denoised = self.denoise(run, x, sigma_hat)
            d = to_d(x, sigma_hat, denoised)
            dt = per_sample(next_sigma - sigma_hat, x)
            x = self.correction(run, x + dt * d, x, d, dt, next_sigma)
            run.step_done(i, sigmas[i])
        return x


class EulerEDMSampler(EDMSampler):
    """First-order EDM sampler."""


class HeunEDMSampler(EDMSampler):
    """Second-order EDM sampler (Heun's correction, skipped when the next sigma is 0)."""

    def correction(
        self, run: SamplingRun, euler: torch.Tensor, x: torch.Tensor, d: torch.Tensor, dt: torch.Tensor, next_sigma: torch.Tensor
    ) -> torch.Tensor:
        if torch.sum(next_sigma) < 1e-14:
            return euler
        d_new = to_d(euler, next_sigma, self.denoise(run, euler, next_sigma))
        return torch.where(per_sample(next_sigma, x) > 0.0, x + (d + d_new) / 2.0 * dt, euler)


class DDIMSampler(SigmaSampler):
    """DDIM in sigma space with noise share ``s_noise``.

    The original calls a correction step it never defines (AttributeError); as in every sgm
    sampler without a corrector, the Euler-type update is the result.
    """

    def __init__(self, s_noise: float = 0.1, **base: Any) -> None:
        super().__init__(**base)
        self.s_noise = s_noise

    def sample(self, run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
        s_noise = self.s_noise
        for i in range(len(sigmas) - 1):
            sigma, next_sigma = s_in * sigmas[i], s_in * sigmas[i + 1]
            d = to_d(x, sigma, self.denoise(run, x, sigma))
            dt = per_sample(next_sigma * (1 - s_noise**2) ** 0.5 - sigma, x)
            x = x + dt * d + s_noise * per_sample(next_sigma, x) * run.noise(x)
            run.step_done(i, sigmas[i])
        return x


class AncestralSampler(SigmaSampler):
    """Shared ancestral noise injection (``eta`` scales the stochasticity)."""

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, **base: Any) -> None:
        super().__init__(**base)
        self.eta = eta
        self.s_noise = s_noise

    def add_noise(self, run: SamplingRun, x: torch.Tensor, next_sigma: torch.Tensor, sigma_up: Any) -> torch.Tensor:
        noise = run.noise(x)  # drawn every step, as the original
        up = per_sample(sigma_up, x) if isinstance(sigma_up, torch.Tensor) else sigma_up
        return torch.where(per_sample(next_sigma, x) > 0.0, x + noise * self.s_noise * up, x)

    def sample(self, run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
        for i in range(len(sigmas) - 1):
            x = self.step(run, x, s_in * sigmas[i], s_in * sigmas[i + 1])
            run.step_done(i, sigmas[i])
        return x

    def step(self, run: SamplingRun, x: torch.Tensor, sigma: torch.Tensor, next_sigma: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} does not define step()")


class EulerAncestralSampler(AncestralSampler):
    """Euler step to sigma_down, then noise up to the next sigma."""

    def step(self, run: SamplingRun, x: torch.Tensor, sigma: torch.Tensor, next_sigma: torch.Tensor) -> torch.Tensor:
        sigma_down, sigma_up = ancestral_step(sigma, next_sigma, eta=self.eta)
        denoised = self.denoise(run, x, sigma)
        x = x + to_d(x, sigma, denoised) * per_sample(sigma_down - sigma, x)
        return self.add_noise(run, x, next_sigma, sigma_up)


class DPMPP2SAncestralSampler(AncestralSampler):
    """DPM-Solver++(2S) to sigma_down (Euler when it is 0), then ancestral noise."""

    def step(self, run: SamplingRun, x: torch.Tensor, sigma: torch.Tensor, next_sigma: torch.Tensor) -> torch.Tensor:
        sigma_down, sigma_up = ancestral_step(sigma, next_sigma, eta=self.eta)
        denoised = self.denoise(run, x, sigma)
        x_euler = x + to_d(x, sigma, denoised) * per_sample(sigma_down - sigma, x)
        if torch.sum(sigma_down) < 1e-14:
            x = x_euler
        else:
            t, t_next = -sigma.log(), -sigma_down.log()
            h = t_next - t
            s = t + 0.5 * h
            # sigma = exp(-t), computed back from t as the original does (not the inputs).
            sigma_t, sigma_s, sigma_next = (-t).exp(), (-s).exp(), (-t_next).exp()
            x2 = per_sample(sigma_s / sigma_t, x) * x - per_sample((-0.5 * h).expm1(), x) * denoised
            denoised2 = self.denoise(run, x2, sigma_s)
            x_dpmpp2s = per_sample(sigma_next / sigma_t, x) * x - per_sample((-h).expm1(), x) * denoised2
            x = torch.where(per_sample(sigma_down, x) > 0.0, x_dpmpp2s, x_euler)
        return self.add_noise(run, x, next_sigma, sigma_up)


class _MultistepSampler(SigmaSampler):
    """DPM-Solver++(2M), deterministic or SDE; the first step and a final sigma of 0 use first order."""

    sde = False

    def sample(self, run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
        old_denoised = None
        for i in range(len(sigmas) - 1):
            previous = None if i == 0 else s_in * sigmas[i - 1]
            sigma, next_sigma = s_in * sigmas[i], s_in * sigmas[i + 1]
            denoised = self.denoise(run, x, sigma)
            t, t_next = -sigma.log(), -next_sigma.log()
            h = t_next - t
            ratio = (-t_next).exp() / (-t).exp()  # next_sigma / sigma, through t as the original
            if self.sde:
                mult1 = per_sample(ratio * (-h).exp(), x)
                mult2 = per_sample((-2 * h).expm1(), x)
                noise_coef = per_sample(next_sigma * (1 - (-2 * h).exp()) ** 0.5, x)
                x_standard = mult1 * x - mult2 * denoised + noise_coef * run.noise(x)
            else:
                mult1 = per_sample(ratio, x)
                mult2 = per_sample((-h).expm1(), x)
                x_standard = mult1 * x - mult2 * denoised
            if old_denoised is None or torch.sum(next_sigma) < 1e-14:
                x_new = x_standard
            else:
                assert previous is not None
                r = per_sample((t - (-previous.log())) / h, x)  # h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
                x_advanced = mult1 * x - mult2 * denoised_d
                if self.sde:
                    x_advanced = x_advanced + noise_coef * run.noise(x)
                x_new = torch.where(per_sample(next_sigma, x) > 0.0, x_advanced, x_standard)
            x, old_denoised = x_new, denoised
            run.step_done(i, sigmas[i])
        return x


class DPMPP2MSampler(_MultistepSampler):
    """DPM-Solver++(2M), deterministic."""


class SDEDPMPP2MSampler(_MultistepSampler):
    """DPM-Solver++(2M) SDE: one noise draw on the first step, two afterwards (as the original)."""

    sde = True


class LinearMultistepSampler(SigmaSampler):
    """Linear multistep (Adams-type) in sigma with up to ``order`` past derivatives."""

    def __init__(self, order: int = 4, **base: Any) -> None:
        super().__init__(**base)
        self.order = order

    def sample(self, run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
        ds: list[torch.Tensor] = []
        sigmas_cpu = sigmas.detach().cpu().double().numpy()
        for i in range(len(sigmas) - 1):
            sigma = s_in * sigmas[i]
            ds.append(to_d(x, sigma, self.denoise(run, x, sigma)))
            if len(ds) > self.order:
                ds.pop(0)
            order = min(i + 1, self.order)
            coeffs = [linear_multistep_coeff(order, sigmas_cpu, i, j) for j in range(order)]
            x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
            run.step_done(i, sigmas[i])
        return x
