"""Denoiser scalings (``c_skip, c_out, c_in, c_noise`` for a noise level) and loss weightings.

Scalings hold the prediction type: ``D(x) = network(x * c_in, c_noise) * c_out + x * c_skip``.
Formulas as in the original ``denoiser_scaling.py`` / ``denoiser_weighting.py`` (REFERENCE §5.2).
"""

from __future__ import annotations

from typing import Any

import torch

from cogvid.errors import UsageError

Scaling = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class EDMScaling:
    """Karras et al. preconditioning with data std ``sigma_data``; c_noise = ln(sigma) / 4."""

    def __init__(self, sigma_data: float = 0.5) -> None:
        self.sigma_data = sigma_data

    def __call__(self, sigma: torch.Tensor, **extra: Any) -> Scaling:
        c_skip = self.sigma_data**2 / (sigma**2 + self.sigma_data**2)
        c_out = sigma * self.sigma_data / (sigma**2 + self.sigma_data**2) ** 0.5
        c_in = 1 / (sigma**2 + self.sigma_data**2) ** 0.5
        c_noise = 0.25 * sigma.log()
        return c_skip, c_out, c_in, c_noise


class EpsScaling:
    """The network predicts the noise: ``D = x - sigma * eps``."""

    def __call__(self, sigma: torch.Tensor, **extra: Any) -> Scaling:
        c_skip = torch.ones_like(sigma)
        c_out = -sigma
        c_in = 1 / (sigma**2 + 1.0) ** 0.5
        c_noise = sigma.clone()
        return c_skip, c_out, c_in, c_noise


class VScaling:
    """The network predicts v (sigma-space form)."""

    def __call__(self, sigma: torch.Tensor, **extra: Any) -> Scaling:
        c_skip = 1.0 / (sigma**2 + 1.0)
        c_out = -sigma / (sigma**2 + 1.0) ** 0.5
        c_in = 1.0 / (sigma**2 + 1.0) ** 0.5
        c_noise = sigma.clone()
        return c_skip, c_out, c_in, c_noise


class VScalingWithEDMcNoise(VScaling):
    """VScaling with the EDM noise conditioning ``c_noise = ln(sigma) / 4``."""

    def __call__(self, sigma: torch.Tensor, **extra: Any) -> Scaling:
        c_skip, c_out, c_in, _ = super().__call__(sigma)
        return c_skip, c_out, c_in, 0.25 * sigma.log()


class VideoScaling:
    """CogVideoX's v-prediction in alpha space: input a = sqrt(alpha_cumprod), ``D = a x - sqrt(1 - a^2) v``.

    The network is conditioned on the DDPM timestep, which the sampler passes as ``idx``.
    """

    #: The noise level this scaling takes is sqrt(alpha_cumprod), not sigma.
    alpha_space = True

    def __call__(self, alphas_cumprod_sqrt: torch.Tensor, **extra: Any) -> Scaling:
        if "idx" not in extra:
            raise UsageError(
                "VideoScaling needs the DDPM timestep `idx`, which this sampler did not pass",
                hint="use a sampler from cogvid.diffusion (all of them pass it for CogVideoX models)",
            )
        c_skip = alphas_cumprod_sqrt
        c_out = -((1 - alphas_cumprod_sqrt**2) ** 0.5)
        c_in = torch.ones_like(alphas_cumprod_sqrt)
        c_noise = extra["idx"].clone()
        return c_skip, c_out, c_in, c_noise


# --------------------------------------------------------------------------------------------
# Loss weightings (used in training; part of the denoiser's config, so built at inference too).


class UnitWeighting:
    """Weight 1 at every noise level."""

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)


class EDMWeighting:
    """``(sigma^2 + sigma_data^2) / (sigma * sigma_data)^2``."""

    def __init__(self, sigma_data: float = 0.5) -> None:
        self.sigma_data = sigma_data

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


class VWeighting(EDMWeighting):
    """EDMWeighting with ``sigma_data = 1``."""

    def __init__(self) -> None:
        super().__init__(sigma_data=1.0)


class EpsWeighting:
    """``sigma^-2``."""

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma**-2.0
