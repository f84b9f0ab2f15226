"""Every sampler draws from the right distribution on Gaussian data, with the exact x0-predictor.

Data x0 ~ N(MU, STD^2) per element, 4000 samples. With the exact denoiser of the noisy marginal,
a correct sampler returns mean MU and std STD up to discretization and sampling error
(standard errors: mean 0.008, std 0.006); tolerance 0.04 for both.
"""

from __future__ import annotations

import pytest
import torch
from fixtures.diffusion_toys import GaussianAlphaDenoiser, GaussianSigmaDenoiser
from omegaconf import OmegaConf

from cogvid.config import instantiate
from cogvid.diffusion import SAMPLER_NAMES
from cogvid.diffusion.samplers import DDIMSampler

MU, STD, TOL = 0.7, 0.5, 0.04
P = "sgm.modules.diffusionmodules."
# First-order stochastic samplers shrink the std at coarse steps (0.44 at 40 steps, 0.49 at 160).
STEPS = {"euler-ancestral": 160}
SIGMA_ONLY = [name for name, target in SAMPLER_NAMES.items() if "VP" not in target and "Video" not in target]


def sampler_node(target: str, discretization: str, steps: int, **params):
    return OmegaConf.create({
        "target": target,
        "params": {"num_steps": steps, "discretization_config": {"target": P + "discretizer." + discretization}, **params},
    })


def check(samples: torch.Tensor) -> None:
    assert torch.isfinite(samples).all()
    assert abs(samples.mean().item() - MU) < TOL
    assert abs(samples.std().item() - STD) < TOL


@pytest.mark.parametrize("name", list(SAMPLER_NAMES))
def test_sampler_on_the_cogvideox_alpha_space_model(name):
    sampler = instantiate(sampler_node(SAMPLER_NAMES[name], "ZeroSNRDDPMDiscretization", STEPS.get(name, 50)))
    denoiser = GaussianAlphaDenoiser(MU, STD)
    noise = torch.randn((4000, 1), generator=torch.Generator().manual_seed(0))
    samples = sampler(denoiser, noise, {}, generator=torch.Generator().manual_seed(1))
    check(samples)
    # every evaluation received a DDPM timestep in 0..999
    assert denoiser.idx_seen and all(0 <= t <= 999 and t == int(t) for t in denoiser.idx_seen)


@pytest.mark.parametrize("name", SIGMA_ONLY)
def test_sigma_sampler_on_an_edm_model(name):
    sampler = instantiate(sampler_node(SAMPLER_NAMES[name], "EDMDiscretization", STEPS.get(name, 40)))
    noise = torch.randn((4000, 1), generator=torch.Generator().manual_seed(0))
    check(sampler(GaussianSigmaDenoiser(MU, STD), noise, {}, generator=torch.Generator().manual_seed(1)))


def test_euler_edm_with_churn_and_sigma_ddim():
    churn = instantiate(sampler_node(SAMPLER_NAMES["euler-edm"], "EDMDiscretization", 160, s_churn=10.0))
    noise = torch.randn((4000, 1), generator=torch.Generator().manual_seed(0))
    check(churn(GaussianSigmaDenoiser(MU, STD), noise, {}, generator=torch.Generator().manual_seed(1)))
    ddim = DDIMSampler(
        s_noise=0.1,
        num_steps=160,
        discretization_config=OmegaConf.create({"target": P + "discretizer.EDMDiscretization"}),
    )
    check(ddim(GaussianSigmaDenoiser(MU, STD), noise, {}, generator=torch.Generator().manual_seed(1)))
