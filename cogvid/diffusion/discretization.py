"""Noise-level discretizations: the sequence of sigmas (or sqrt(alpha_cumprod)) a sampler walks.

Same arrays as the original ``sgm.modules.diffusionmodules.discretizer`` for every step count:
the DDPM tables are built in float64 with numpy, the selected entries are converted to float32
and, for the zero-terminal-SNR schedule, rescaled on the selected subset (REFERENCE §5.1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cogvid.diffusion import check_num_steps


def linear_beta_schedule(num_timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
    """``linspace(sqrt(start), sqrt(end), n) ** 2`` in float64 (diffusers' "scaled_linear")."""
    roots = torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64)
    return (roots**2).numpy()


def spaced_timesteps(num_steps: int, num_timesteps: int) -> np.ndarray:
    """The ``num_steps`` DDPM timesteps a sampler visits, ascending (e.g. 19, 39, ..., 999 for 50 of 1000)."""
    return np.linspace(num_timesteps - 1, 0, num_steps, endpoint=False).astype(int)[::-1]


class Discretization:
    """Base: ``__call__`` appends a zero, flips and returns the DDPM indices as the original does."""

    #: True when the values are sqrt(alpha_cumprod) (rising to ~1) rather than sigmas (falling to 0).
    returns_alpha: bool = False
    #: Length of the underlying DDPM table (None for continuous schedules such as EDM).
    num_timesteps: int | None = None

    def __call__(
        self,
        n: int,
        do_append_zero: bool = True,
        device: Any = "cpu",
        flip: bool = False,
        return_idx: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, np.ndarray | None]:
        """``n`` noise levels in sampling order (plus a trailing 0 if ``do_append_zero``)."""
        values, idx = self.get_sigmas(n, device=device)
        if do_append_zero:
            values = torch.cat([values, values.new_zeros([1])])
        if flip:
            values = torch.flip(values, (0,))
        return (values, idx) if return_idx else values

    def get_sigmas(self, n: int, device: Any = "cpu") -> tuple[torch.Tensor, np.ndarray | None]:
        """The ``n`` values in sampling order and the DDPM timesteps they belong to (ascending)."""
        raise TypeError(f"{type(self).__name__} does not define get_sigmas")


class EDMDiscretization(Discretization):
    """Karras et al. sigmas: ``(smax^(1/rho) + i/(n-1) * (smin^(1/rho) - smax^(1/rho)))^rho``."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.rho = rho

    def get_sigmas(self, n: int, device: Any = "cpu") -> tuple[torch.Tensor, np.ndarray | None]:
        n = check_num_steps(n, 10**6)
        ramp = torch.linspace(0, 1, n, device=device)
        min_inv_rho = self.sigma_min ** (1 / self.rho)
        max_inv_rho = self.sigma_max ** (1 / self.rho)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** self.rho, None


class _DDPMTable(Discretization):
    """Shared selection of ``n`` roughly equally spaced entries of a 1000-step DDPM table."""

    alphas_cumprod: np.ndarray

    def _select(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.num_timesteps is not None
        n = check_num_steps(n, self.num_timesteps)
        if n < self.num_timesteps:
            timesteps = spaced_timesteps(n, self.num_timesteps)
        else:
            timesteps = np.arange(self.num_timesteps)
        return self.alphas_cumprod[timesteps], timesteps


class LegacyDDPMDiscretization(_DDPMTable):
    """``sigma_t = sqrt((1 - abar_t) / abar_t)`` of the linear-beta DDPM schedule, falling."""

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.0120, num_timesteps: int = 1000) -> None:
        self.num_timesteps = num_timesteps
        betas = linear_beta_schedule(num_timesteps, linear_start, linear_end)
        self.alphas_cumprod = np.cumprod(1.0 - betas, axis=0)

    def get_sigmas(self, n: int, device: Any = "cpu") -> tuple[torch.Tensor, np.ndarray | None]:
        alphas_cumprod, timesteps = self._select(n)
        sigmas = torch.tensor((1 - alphas_cumprod) / alphas_cumprod, dtype=torch.float32, device=device) ** 0.5
        return torch.flip(sigmas, (0,)), timesteps


class ZeroSNRDDPMDiscretization(_DDPMTable):
    """sqrt(alpha_cumprod) of the SNR-shifted DDPM schedule, rescaled to zero terminal SNR.

    Values rise from 0 (t = 999) to ~0.99 in sampling order. ``shift_scale`` s shifts the
    log-SNR by ``-log s``: ``abar <- abar / (s + (1 - s) abar)``.
    """

    returns_alpha = True

    def __init__(
        self,
        linear_start: float = 0.00085,
        linear_end: float = 0.0120,
        num_timesteps: int = 1000,
        shift_scale: float = 1.0,
        keep_start: bool = False,
        post_shift: bool = False,
    ) -> None:
        if keep_start and not post_shift:
            linear_start = linear_start / (shift_scale + (1 - shift_scale) * linear_start)
        self.num_timesteps = num_timesteps
        betas = linear_beta_schedule(num_timesteps, linear_start, linear_end)
        alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
        if not post_shift:
            alphas_cumprod = alphas_cumprod / (shift_scale + (1 - shift_scale) * alphas_cumprod)
        self.alphas_cumprod = alphas_cumprod
        self.shift_scale = shift_scale
        self.post_shift = post_shift

    def get_sigmas(self, n: int, device: Any = "cpu") -> tuple[torch.Tensor, np.ndarray | None]:
        alphas_cumprod, timesteps = self._select(n)
        root = torch.tensor(alphas_cumprod, dtype=torch.float32, device=device).sqrt()
        first = root[0].clone()  # smallest selected t
        last = root[-1].clone()  # t = num_timesteps - 1
        if n > 1:
            # Zero-terminal-SNR rescale of the selected subset, in float32, in the original's op order.
            root -= last
            root *= first / (first - last)
        else:
            # One step: the only entry is the terminal one, which the rescale maps to 0 (the
            # original computes 0/0 = NaN here).
            root = torch.zeros_like(root)
        if self.post_shift:
            root = (root**2 / (self.shift_scale + (1 - self.shift_scale) * root**2)) ** 0.5
        return torch.flip(root, (0,)), timesteps
