"""Whole sampler runs against golden outputs of the ORIGINAL sgm code (see golden/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures.diffusion_toys import toy_inputs, toy_network
from omegaconf import OmegaConf

from cogvid.config import instantiate

GOLDEN = torch.load(Path(__file__).parent / "golden" / "original_samplers.pt", weights_only=True)
P = "sgm.modules.diffusionmodules."


def disc(kind: str, **params):
    return {"target": P + "discretizer." + kind, "params": params}


def guider(kind: str, **params):
    return {"target": P + "guiders." + kind, "params": params}


def make_denoiser(scaling: str, discretization: dict, quantize: bool = False):
    node = {
        "target": P + "denoiser.DiscreteDenoiser",
        "params": {
            "num_idx": 1000,
            "quantize_c_noise": quantize,
            "weighting_config": {"target": P + "denoiser_weighting.EpsWeighting"},
            "scaling_config": {"target": P + "denoiser_scaling." + scaling},
            "discretization_config": discretization,
        },
    }
    return instantiate(OmegaConf.create(node))


def recording(denoiser, calls):
    def fn(x, level, cond, **extra):
        calls.append((float(level[0]), float(extra["idx"][0]) if "idx" in extra else -1.0))
        return denoiser(toy_network, x, level, cond, **extra)

    return fn


VIDEO_CASES = {
    "vpsde_shift3_dyncfg": ("VPSDEDPMPP2MSampler", 50, disc("ZeroSNRDDPMDiscretization", shift_scale=3.0), guider("DynamicCFG", scale=6, exp=5, num_steps=50)),
    "vpsde_shift1_cfg_10": ("VPSDEDPMPP2MSampler", 10, disc("ZeroSNRDDPMDiscretization"), guider("VanillaCFG", scale=4.5)),
    "videoddim_shift1_dyncfg_20": ("VideoDDIMSampler", 20, disc("ZeroSNRDDPMDiscretization"), guider("DynamicCFG", scale=6, exp=5, num_steps=20)),
    "vpode_shift1_cfg_15": ("VPODEDPMPP2MSampler", 15, disc("ZeroSNRDDPMDiscretization"), guider("VanillaCFG", scale=3.0)),
}


@pytest.mark.parametrize("name", list(VIDEO_CASES))
def test_video_samplers_equal_the_original(name):
    cls, steps, discretization, guider_node = VIDEO_CASES[name]
    sampler = instantiate(OmegaConf.create({
        "target": P + "sampling." + cls,
        "params": {"num_steps": steps, "verbose": True, "discretization_config": discretization, "guider_config": guider_node},
    }))
    x, cond, uc = toy_inputs()
    assert torch.equal(x, GOLDEN["x"])
    calls: list = []
    out = sampler(recording(make_denoiser("VideoScaling", discretization), calls), x, cond, uc=uc,
                  generator=torch.Generator().manual_seed(1234))
    # Same network inputs (level passed, timestep) at every step, and the same result.
    assert torch.equal(torch.tensor(calls), GOLDEN[name + "_calls"])
    assert torch.equal(out, GOLDEN[name])  # bit for bit


SIGMA_CASES = {
    "euler_edm_churn": ("EulerEDMSampler", {"s_churn": 2.0}),
    "heun_edm": ("HeunEDMSampler", {}),
    "euler_ancestral": ("EulerAncestralSampler", {}),
    "dpmpp2s_ancestral": ("DPMPP2SAncestralSampler", {}),
    "dpmpp2m": ("DPMPP2MSampler", {}),
    "sde_dpmpp2m": ("SDEDPMPP2MSampler", {}),
    "lms": ("LinearMultistepSampler", {}),
}


@pytest.mark.parametrize("name", list(SIGMA_CASES))
def test_sigma_samplers_equal_the_original_on_an_eps_model(name):
    cls, extra = SIGMA_CASES[name]
    legacy = disc("LegacyDDPMDiscretization")
    sampler = instantiate(OmegaConf.create({
        "target": P + "sampling." + cls,
        "params": {"num_steps": 8, "discretization_config": legacy, "guider_config": guider("VanillaCFG", scale=2.5), **extra},
    }))
    x, cond, uc = toy_inputs()
    calls: list = []
    out = sampler(recording(make_denoiser("EpsScaling", legacy, quantize=True), calls), x, cond, uc=uc,
                  generator=torch.Generator().manual_seed(99))
    torch.testing.assert_close(torch.tensor(calls), GOLDEN["legacy_" + name + "_calls"], rtol=1e-6, atol=0)
    if name == "lms":  # coefficients by exact Gauss-Legendre instead of adaptive quadrature
        torch.testing.assert_close(out, GOLDEN["legacy_lms"], rtol=1e-6, atol=5e-6)
    else:
        assert torch.equal(out, GOLDEN["legacy_" + name])  # bit for bit
