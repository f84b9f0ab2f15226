"""The denoiser: applies a scaling around the network, ``D(x, sigma) = F(x c_in, c_noise) c_out + x c_skip``.

``DiscreteDenoiser`` first snaps the noise level to the nearest entry of its 1000-step table
(first minimum wins), as the original does for every call (REFERENCE §5.2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cogvid.config import instantiate


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """``x`` with trailing singleton dimensions up to ``target_dims``: (B,) -> (B, 1, ..., 1)."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}")
    return x[(...,) + (None,) * missing]


class Denoiser(nn.Module):
    """Wraps a network with a scaling (prediction type) and a loss weighting."""

    def __init__(self, weighting_config: Any, scaling_config: Any) -> None:
        super().__init__()
        self.weighting = instantiate(weighting_config)
        self.scaling = instantiate(scaling_config)

    def possibly_quantize_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def possibly_quantize_c_noise(self, c_noise: torch.Tensor) -> torch.Tensor:
        return c_noise

    def w(self, sigma: torch.Tensor) -> torch.Tensor:
        """The loss weight at ``sigma``."""
        return self.weighting(sigma)

    def forward(
        self,
        network: Any,
        input: torch.Tensor,
        sigma: torch.Tensor,
        cond: dict[str, Any],
        **extra: Any,
    ) -> torch.Tensor:
        """The denoised ``input`` (x0 prediction); ``network(x * c_in, c_noise, cond, **extra)``."""
        sigma = self.possibly_quantize_sigma(sigma)
        sigma_shape = sigma.shape
        sigma = append_dims(sigma, input.ndim)  # (B,) -> (B, 1, ..., 1)
        c_skip, c_out, c_in, c_noise = self.scaling(sigma, **extra)
        c_noise = self.possibly_quantize_c_noise(c_noise.reshape(sigma_shape))  # (B, 1, ..., 1) -> (B,)
        return network(input * c_in, c_noise, cond, **extra) * c_out + input * c_skip


class DiscreteDenoiser(Denoiser):
    """A denoiser for a model trained on ``num_idx`` discrete noise levels.

    ``sigmas[t]`` is the level of DDPM timestep t (for ZeroSNR: sqrt(alpha_cumprod_t)).
    """

    def __init__(
        self,
        weighting_config: Any,
        scaling_config: Any,
        num_idx: int,
        discretization_config: Any,
        do_append_zero: bool = False,
        quantize_c_noise: bool = True,
        flip: bool = True,
    ) -> None:
        super().__init__(weighting_config, scaling_config)
        discretization = instantiate(discretization_config)
        # A plain attribute (not a buffer), so `.half()` on the engine never rounds the table.
        self.sigmas: torch.Tensor = discretization(num_idx, do_append_zero=do_append_zero, flip=flip)
        self.quantize_c_noise = quantize_c_noise

    def _table(self, device: torch.device) -> torch.Tensor:
        if self.sigmas.device != device:
            self.sigmas = self.sigmas.to(device)
        return self.sigmas

    def sigma_to_idx(self, sigma: torch.Tensor) -> torch.Tensor:
        """Index of the nearest table entry (the first one on ties)."""
        dists = sigma - self._table(sigma.device)[:, None]  # (num_idx, B)
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def idx_to_sigma(self, idx: torch.Tensor) -> torch.Tensor:
        """Table entry at ``idx``."""
        return self._table(idx.device)[idx]

    def possibly_quantize_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.idx_to_sigma(self.sigma_to_idx(sigma))

    def possibly_quantize_c_noise(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.sigma_to_idx(c_noise) if self.quantize_c_noise else c_noise
