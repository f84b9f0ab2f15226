"""Parity with diffusers' CogVideoX schedulers and dynamic CFG (diffusers is a test-only reference).

Same algorithm, same timesteps; trajectories agree when diffusers is given the original's alphas
(subset-rescaled) and the same model function and noise. Where the original differs (subset
rescale, alpha quantization), the difference itself is tested.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from cogvid.config import instantiate
from cogvid.diffusion.discretization import ZeroSNRDDPMDiscretization
from fixtures.margins import assert_beyond, assert_error_within, assert_within

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.parity

P = "sgm.modules.diffusionmodules."


def scheduler(kind: str, shift: float, prediction_type: str = "v_prediction"):
    cls = {"dpm": diffusers.CogVideoXDPMScheduler, "ddim": diffusers.CogVideoXDDIMScheduler}[kind]
    return cls(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", snr_shift_scale=shift,
        rescale_betas_zero_snr=True, prediction_type=prediction_type, set_alpha_to_one=True,
        timestep_spacing="trailing", clip_sample=False,
    )


@pytest.mark.parametrize("n", [1, 2, 4, 5, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000])
def test_same_timesteps_as_diffusers_trailing(n):
    sched = scheduler("dpm", 1.0)
    sched.set_timesteps(n)
    _, timesteps = ZeroSNRDDPMDiscretization()(n, return_idx=True)
    assert list(reversed([int(t) for t in timesteps])) == sched.timesteps.tolist()


# Measured with tools/check_portability.py (ATEN default/avx2/avx512, oneDNN and MKL AVX2, 1-2 threads):
TABLE_TOLERANCE = 5e-7  # sqrt(alpha_cumprod) in [0, 1], float32 in both; measured max 8.0e-8 (about 1 ulp).
# The subset rescale below moves alphas by 6e-4 to 1e-3.


@pytest.mark.parametrize(("shift", "max_delta"), [(3.0, 1.0e-3), (1.0, 6.2e-4)])
def test_alphas_table_equal_subset_differs_by_the_documented_amount(shift, max_delta):
    sched = scheduler("dpm", shift)
    reference = sched.alphas_cumprod.double().sqrt()
    table = ZeroSNRDDPMDiscretization(shift_scale=shift)(1000, do_append_zero=False, flip=True)
    assert_within(table, reference, TABLE_TOLERANCE, "1000-entry table")
    alphas, timesteps = ZeroSNRDDPMDiscretization(shift_scale=shift)(50, do_append_zero=False, return_idx=True)
    full = reference[torch.tensor(list(reversed(list(timesteps))))]
    delta = (alphas.double() - full).abs().max().item()
    # The documented amounts are rounded to two digits: measured within 2% of them.
    assert_error_within(abs(delta / max_delta - 1), 0.05, "subset rescale vs the documented amount, relative")


def feed_alphas(sched, alphas: torch.Tensor, timesteps: list[int], dtype: torch.dtype) -> None:
    """Give diffusers the original's per-step alphas at the timesteps it visits."""
    table = sched.alphas_cumprod.to(dtype).clone()
    for a, t in zip(alphas.to(dtype), timesteps):
        table[t] = a**2
    sched.alphas_cumprod = table


def x0_model(x: torch.Tensor, t: int, cond) -> torch.Tensor:
    return 0.9 * torch.tanh(0.7 * x + 0.001 * t) + 0.3 * cond + 0.05 * math.sin(0.01 * t)


def diffusers_dynamic_scale(guidance: float, n: int, t: int) -> float:
    # The pipeline's use_dynamic_cfg formula.
    return 1 + guidance * ((1 - math.cos(math.pi * ((n - t) / n) ** 5.0)) / 2)


def run_both(kind: str, n: int, shift: float, dtype: torch.dtype, guidance: float = 6.0):
    sampler_cls = {"dpm": "VPSDEDPMPP2MSampler", "ddim": "VideoDDIMSampler"}[kind]
    sampler = instantiate(OmegaConf.create({
        "target": P + "sampling." + sampler_cls,
        "params": {
            "num_steps": n,
            "discretization_config": {"target": P + "discretizer.ZeroSNRDDPMDiscretization", "params": {"shift_scale": shift}},
            "guider_config": {"target": P + "guiders.DynamicCFG", "params": {"scale": guidance, "exp": 5, "num_steps": n}},
        },
    }))
    x = torch.randn((2, 3, 4, 2, 2), generator=torch.Generator().manual_seed(5), dtype=dtype)
    cond_value = 0.7

    def denoiser(x_in, level, c, idx):
        # (2B, ...): uncond half first; the model sees the timestep only, as the DiT does.
        t = int(idx[0])
        assert torch.equal(idx, torch.full_like(idx, t))
        half = x_in.shape[0] // 2
        context = c["crossattn"].reshape(-1, 1, 1, 1, 1)  # (2B, 1) -> (2B, 1, 1, 1, 1)
        assert torch.all(context[:half] == 0)
        return x0_model(x_in, t, context)

    ones = torch.ones((x.shape[0], 1), dtype=dtype)
    ours = sampler(denoiser, x, {"crossattn": ones * cond_value}, uc={"crossattn": ones * 0},
                   generator=torch.Generator().manual_seed(11))

    sched = scheduler(kind, shift, prediction_type="sample")
    sched.set_timesteps(n)
    timesteps = sched.timesteps.tolist()
    alphas = ZeroSNRDDPMDiscretization(shift_scale=shift)(n, do_append_zero=False)
    feed_alphas(sched, alphas, timesteps, dtype)
    generator = torch.Generator().manual_seed(11)
    latents, old = x.clone(), None
    for i, t in enumerate(timesteps):
        uncond, cond = x0_model(latents, t, 0.0), x0_model(latents, t, cond_value)
        pred = uncond + diffusers_dynamic_scale(guidance, n, t) * (cond - uncond)
        if kind == "dpm":
            latents, old = sched.step(pred, old, t, timesteps[i - 1] if i > 0 else None, latents,
                                      generator=generator, return_dict=False)
        else:
            latents = sched.step(pred, t, latents, return_dict=False)[0]
    return ours, latents


# Max abs error of whole trajectories (|x| <= 1.6): float64 measured max 0, float32 4.8e-7.
@pytest.mark.parametrize("kind", ["dpm", "ddim"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize(("n", "shift"), [(50, 3.0), (20, 1.0)])
def test_trajectory_equals_diffusers_given_the_same_alphas(kind, dtype, tol, n, shift):
    ours, theirs = run_both(kind, n, shift, dtype)
    assert ours.dtype == dtype
    assert_within(ours, theirs, tol, f"{dtype}".removeprefix("torch."))


def test_without_the_original_alphas_diffusers_differs():
    """diffusers' own (full-table) alphas give a different run: the original's subset rescale matters."""
    ours, _ = run_both("ddim", 20, 3.0, torch.float64)
    sched = scheduler("ddim", 3.0, prediction_type="sample")
    sched.set_timesteps(20)
    x = torch.randn((2, 3, 4, 2, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for t in sched.timesteps.tolist():
        uncond, cond = x0_model(x, t, 0.0), x0_model(x, t, 0.7)
        x = sched.step(uncond + diffusers_dynamic_scale(6.0, 20, t) * (cond - uncond), t, x, return_dict=False)[0]
    assert_beyond(ours, x, 1e-5, "diffusers' own alphas")  # measured 1.2e-2
