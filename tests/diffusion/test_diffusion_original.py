"""Whole sampler runs against golden outputs of the ORIGINAL sgm code (see golden/README.md).

The samplers run on the golden's stored inputs and are compared within measured tolerances: the
goldens come from another CPU, so float32 results agree to rounding, not bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures.diffusion_toys import toy_inputs, toy_network
from fixtures.margins import assert_beyond, assert_error_beyond, assert_error_within, assert_within, max_rel_error
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


def recording(denoiser, calls, idx_shift: int = 0):
    """The toy network behind ``denoiser``, recording (level, idx) per call; ``idx_shift`` plants a timestep bug."""

    def fn(x, level, cond, **extra):
        if idx_shift:
            extra = {**extra, "idx": extra["idx"] + idx_shift}
        calls.append((float(level[0]), float(extra["idx"][0]) if "idx" in extra else -1.0))
        return denoiser(toy_network, x, level, cond, **extra)

    return fn


def golden_inputs():
    """The golden's own noise and text embedding (toy_inputs() as it was run on the recording machine)."""
    crossattn = GOLDEN["crossattn"].clone()
    return GOLDEN["x"].clone(), {"crossattn": crossattn}, {"crossattn": torch.zeros_like(crossattn)}


# The goldens were recorded on another CPU; results agree to float32 rounding, not bit for bit
# (kernels differ by instruction set and thread count). Measured with tools/check_portability.py
# (ATEN default/avx2/avx512, oneDNN and MKL AVX2, 1-2 threads) against the goldens:
VIDEO_TOLERANCE = 1e-5  # max abs error, outputs |x| <= 1.95; measured max 1.6e-6. A timestep off by one: >= 8e-4
SIGMA_REL_TOLERANCE = 5e-6  # max abs error / max |golden|, outputs |x| <= 40; measured max 5.0e-7. Guidance 1% off: >= 1.2e-3
LEVEL_REL_TOLERANCE = 1e-6  # noise levels given to the network (float32 alpha or sigma), relative; measured max 6.3e-8
INPUT_TOLERANCE = 1e-5  # toy_inputs() against the stored inputs (|x| <= 2.4); measured max 5.1e-7 (ATEN default: scalar randn)


def test_toy_inputs_are_the_golden_inputs():
    x, cond, _ = toy_inputs()
    assert_within(x, GOLDEN["x"], INPUT_TOLERANCE, "x")
    assert_within(cond["crossattn"], GOLDEN["crossattn"], INPUT_TOLERANCE, "crossattn")


VIDEO_CASES = {
    "vpsde_shift3_dyncfg": ("VPSDEDPMPP2MSampler", 50, disc("ZeroSNRDDPMDiscretization", shift_scale=3.0), guider("DynamicCFG", scale=6, exp=5, num_steps=50)),
    "vpsde_shift1_cfg_10": ("VPSDEDPMPP2MSampler", 10, disc("ZeroSNRDDPMDiscretization"), guider("VanillaCFG", scale=4.5)),
    "videoddim_shift1_dyncfg_20": ("VideoDDIMSampler", 20, disc("ZeroSNRDDPMDiscretization"), guider("DynamicCFG", scale=6, exp=5, num_steps=20)),
    "vpode_shift1_cfg_15": ("VPODEDPMPP2MSampler", 15, disc("ZeroSNRDDPMDiscretization"), guider("VanillaCFG", scale=3.0)),
}


def run_video_case(name: str, idx_shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, calls (steps, 2) of level and idx) of the video case ``name`` on the golden inputs."""
    cls, steps, discretization, guider_node = VIDEO_CASES[name]
    sampler = instantiate(OmegaConf.create({
        "target": P + "sampling." + cls,
        "params": {"num_steps": steps, "verbose": True, "discretization_config": discretization, "guider_config": guider_node},
    }))
    x, cond, uc = golden_inputs()
    calls: list = []
    out = sampler(recording(make_denoiser("VideoScaling", discretization), calls, idx_shift), x, cond, uc=uc,
                  generator=torch.Generator().manual_seed(1234))
    return out, torch.tensor(calls)


@pytest.mark.parametrize("name", list(VIDEO_CASES))
def test_video_samplers_equal_the_original(name):
    out, calls = run_video_case(name)
    expected = GOLDEN[name + "_calls"]
    # Same network inputs at every step: the same integer timesteps, the same levels (float32 alphas) ...
    assert calls[:, 1].tolist() == expected[:, 1].tolist()
    assert_error_within(max_rel_error(calls[:, 0], expected[:, 0]), LEVEL_REL_TOLERANCE, "levels, relative")
    # ... and the same result.
    assert_within(out, GOLDEN[name], VIDEO_TOLERANCE, "output")


SIGMA_CASES = {
    "euler_edm_churn": ("EulerEDMSampler", {"s_churn": 2.0}),
    "heun_edm": ("HeunEDMSampler", {}),
    "euler_ancestral": ("EulerAncestralSampler", {}),
    "dpmpp2s_ancestral": ("DPMPP2SAncestralSampler", {}),
    "dpmpp2m": ("DPMPP2MSampler", {}),
    "sde_dpmpp2m": ("SDEDPMPP2MSampler", {}),
    "lms": ("LinearMultistepSampler", {}),
}


def run_sigma_case(name: str, guidance: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, calls (model calls, 2) of sigma and -1) of the sigma-space case ``name`` on the golden inputs."""
    cls, extra = SIGMA_CASES[name]
    legacy = disc("LegacyDDPMDiscretization")
    sampler = instantiate(OmegaConf.create({
        "target": P + "sampling." + cls,
        "params": {"num_steps": 8, "discretization_config": legacy, "guider_config": guider("VanillaCFG", scale=guidance), **extra},
    }))
    x, cond, uc = golden_inputs()
    calls: list = []
    out = sampler(recording(make_denoiser("EpsScaling", legacy, quantize=True), calls), x, cond, uc=uc,
                  generator=torch.Generator().manual_seed(99))
    return out, torch.tensor(calls)


@pytest.mark.parametrize("name", list(SIGMA_CASES))
def test_sigma_samplers_equal_the_original_on_an_eps_model(name):
    out, calls = run_sigma_case(name)
    expected = GOLDEN["legacy_" + name + "_calls"]
    assert calls[:, 1].tolist() == expected[:, 1].tolist()  # the same number of model calls (no idx: -1)
    assert_error_within(max_rel_error(calls[:, 0], expected[:, 0]), LEVEL_REL_TOLERANCE, "sigmas, relative")
    # lms: coefficients by exact Gauss-Legendre instead of the original's adaptive quadrature.
    assert_error_within(max_rel_error(out, GOLDEN["legacy_" + name]), SIGMA_REL_TOLERANCE, "output, relative")


def test_the_tolerances_catch_a_wrong_timestep_or_guidance():
    """A timestep off by one, or a guidance scale 1% off, is far outside the tolerances above."""
    for name in ("vpsde_shift1_cfg_10", "videoddim_shift1_dyncfg_20"):
        out, _ = run_video_case(name, idx_shift=1)
        assert_beyond(out, GOLDEN[name], 20 * VIDEO_TOLERANCE, f"{name}, idx + 1")  # measured >= 8.0e-4
    for name in ("heun_edm", "dpmpp2m"):
        out, _ = run_sigma_case(name, guidance=2.5 * 1.01)
        error = max_rel_error(out, GOLDEN["legacy_" + name])
        assert_error_beyond(error, 20 * SIGMA_REL_TOLERANCE, f"{name}, guidance x 1.01, relative")  # measured >= 1.2e-3
