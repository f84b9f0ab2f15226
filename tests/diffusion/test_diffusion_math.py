"""Discretizations, denoiser, scalings and guiders against hand/float64 values and REFERENCE Appendix A."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cogvid.diffusion.denoiser import DiscreteDenoiser
from cogvid.diffusion.discretization import EDMDiscretization, LegacyDDPMDiscretization, ZeroSNRDDPMDiscretization
from cogvid.diffusion.guiders import DynamicCFG, IdentityGuider, VanillaCFG, dynamic_cfg_scale
from cogvid.diffusion.scalings import EDMScaling, EpsScaling, VideoScaling, VScaling, VScalingWithEDMcNoise
from cogvid.errors import ConfigError, UsageError
from fixtures.margins import assert_error_within, assert_within

P = "sgm.modules.diffusionmodules."


def alphas_cumprod_f64(shift: float) -> np.ndarray:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1 - betas)
    return abar / (shift + (1 - shift) * abar)


def subset_alpha_f64(n: int, shift: float) -> np.ndarray:
    """sqrt(abar) on the n selected timesteps, zero-SNR rescaled on the subset, sampling order."""
    t = np.linspace(999, 0, n, endpoint=False).astype(int)[::-1]
    root = np.sqrt(alphas_cumprod_f64(shift)[t])
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    return root[::-1]


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("n", [2, 3, 7, 25, 50, 51, 100, 333, 999, 1000])
def test_zero_snr_subset_matches_float64_formula(n, shift):
    alphas, timesteps = ZeroSNRDDPMDiscretization(shift_scale=shift)(n, do_append_zero=False, return_idx=True)
    assert alphas.dtype == torch.float32 and alphas.shape == (n,)
    np.testing.assert_array_equal(timesteps, np.linspace(999, 0, n, endpoint=False).astype(int)[::-1])
    assert_within(alphas, subset_alpha_f64(n, shift), 1e-6, "float32 vs float64")  # measured max 1.0e-7
    assert alphas[0] == 0


def test_appendix_a_numbers():
    a3 = ZeroSNRDDPMDiscretization(shift_scale=3.0)(50, do_append_zero=False)
    a1 = ZeroSNRDDPMDiscretization(shift_scale=1.0)(50, do_append_zero=False)
    # Six printed digits (rounding up to 5e-7) plus float32 rounding; measured max 4.8e-7 (the printing).
    assert_within(a3[:6], [0.0, 0.005220, 0.010925, 0.017135, 0.023873, 0.031158], 1e-6, "shift 3, first")
    assert_within(a3[-3:], [0.916359, 0.945623, 0.973940], 1e-6, "shift 3, last")
    assert_within(a1[:6], [0.0, 0.009268, 0.019381, 0.030373, 0.042273, 0.055108], 1e-6, "shift 1, first")
    assert_within(a1[-3:], [0.969028, 0.980547, 0.991082], 1e-6, "shift 1, last")
    t3 = ZeroSNRDDPMDiscretization(shift_scale=3.0)(1000, do_append_zero=False, flip=True)
    t1 = ZeroSNRDDPMDiscretization(shift_scale=1.0)(1000, do_append_zero=False, flip=True)
    idx = [0, 19, 499, 979, 999]
    # Eight printed digits; float32 spacing below 1 is 6e-8. Measured max 1.4e-9.
    assert_within(t3[idx], [0.99872637, 0.97291982, 0.30978954, 0.00521482, 0], 6e-8, "shift 3 table")
    assert_within(t1[idx], [0.99957490, 0.99045974, 0.49229988, 0.00926217, 0], 6e-8, "shift 1 table")


def test_discretization_call_options_and_one_step():
    d = ZeroSNRDDPMDiscretization()
    plain = d(10, do_append_zero=False)
    assert torch.equal(d(10)[:-1], plain) and d(10)[-1] == 0
    assert torch.equal(d(10, do_append_zero=False, flip=True), plain.flip(0))
    # One step: the original divides 0 by 0 (NaN); the zero-SNR terminal level 0 is returned.
    one, t = d(1, do_append_zero=False, return_idx=True)
    assert one.tolist() == [0.0] and list(t) == [999]


def test_legacy_ddpm_and_edm_formulas():
    sig = LegacyDDPMDiscretization()(10, do_append_zero=False)
    t = np.linspace(999, 0, 10, endpoint=False).astype(int)[::-1]
    abar = alphas_cumprod_f64(1.0)[t]
    relative = np.abs(sig.numpy() / np.sqrt((1 - abar) / abar)[::-1] - 1).max()
    assert_error_within(float(relative), 5e-7, "legacy sigmas, relative")  # measured max 4.8e-8
    assert 14.5 < float(LegacyDDPMDiscretization()(1000)[0]) < 14.7
    edm = EDMDiscretization()(5)
    i = np.arange(5)
    ref = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert_error_within(float(np.abs(edm[:-1].numpy() / ref - 1).max()), 1e-5, "EDM sigmas, relative")  # measured max 5.0e-7
    assert edm[-1] == 0


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, True])
def test_discretization_rejects_bad_step_counts(bad):
    with pytest.raises(ConfigError):
        ZeroSNRDDPMDiscretization()(bad)


def make_video_denoiser(shift: float) -> DiscreteDenoiser:
    return DiscreteDenoiser(
        weighting_config=OmegaConf.create({"target": P + "denoiser_weighting.EpsWeighting"}),
        scaling_config=OmegaConf.create({"target": P + "denoiser_scaling.VideoScaling"}),
        num_idx=1000,
        discretization_config=OmegaConf.create(
            {"target": P + "discretizer.ZeroSNRDDPMDiscretization", "params": {"shift_scale": shift}}
        ),
        quantize_c_noise=False,
    )


@pytest.mark.parametrize(
    ("shift", "last_exact"),
    [(3.0, 179), (1.0, 239)],
)
def test_quantized_index_per_step_matches_appendix_a(shift, last_exact):
    denoiser = make_video_denoiser(shift)
    alphas = ZeroSNRDDPMDiscretization(shift_scale=shift)(50, do_append_zero=False)
    got = [int(denoiser.sigma_to_idx(a.reshape(1))) for a in alphas]
    timesteps = list(range(999, 0, -20))
    expected = [t if t >= last_exact else t - 1 for t in timesteps]
    assert got == expected


def test_sigma_to_idx_takes_the_first_minimum_and_the_network_contract():
    denoiser = make_video_denoiser(1.0)
    denoiser.sigmas = torch.tensor([0.5, 0.25, 0.25, 0.125])
    assert denoiser.sigma_to_idx(torch.tensor([0.25, 0.375, 0.2])).tolist() == [1, 0, 1]
    seen = {}

    def network(x, c_noise, cond, **extra):
        seen.update(x=x, c_noise=c_noise, cond=cond, extra=extra)
        return torch.full_like(x, 2.0)

    x = torch.ones(2, 3)
    out = denoiser(network, x, torch.tensor([0.26, 0.13]), {"crossattn": 1}, idx=torch.tensor([7.0, 9.0]), ofs=5)
    # c_in = 1, c_noise = idx, quantized a = [0.25, 0.125]: D = a x - sqrt(1 - a^2) * 2
    a = torch.tensor([[0.25], [0.125]])
    torch.testing.assert_close(out, a * x - (1 - a**2).sqrt() * 2.0)
    assert torch.equal(seen["x"], x) and seen["c_noise"].tolist() == [7.0, 9.0]
    assert seen["extra"]["ofs"] == 5 and seen["cond"] == {"crossattn": 1}


def test_scalings_by_hand():
    s = torch.tensor([0.5, 2.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = EpsScaling()(s)
    assert c_skip.tolist() == [1, 1] and torch.equal(c_out, -s) and torch.equal(c_noise, s)
    torch.testing.assert_close(c_in, 1 / torch.sqrt(s**2 + 1))
    c_skip, c_out, c_in, c_noise = VScaling()(s)
    torch.testing.assert_close(c_skip, 1 / (s**2 + 1))
    torch.testing.assert_close(c_out, -s / torch.sqrt(s**2 + 1))
    assert torch.equal(VScalingWithEDMcNoise()(s)[3], 0.25 * s.log())
    c_skip, c_out, c_in, c_noise = EDMScaling(0.5)(s)
    torch.testing.assert_close(c_skip, 0.25 / (s**2 + 0.25))
    torch.testing.assert_close(c_out, s * 0.5 / torch.sqrt(s**2 + 0.25))
    torch.testing.assert_close(c_noise, torch.log(s) / 4)
    with pytest.raises(UsageError, match="idx"):
        VideoScaling()(s)


DYNAMIC_CFG_APPENDIX_A = [
    2.2915, 2.5435, 6.9744, 6.4204, 2.7881, 4.2719, 1.0376, 4.1704, 1.618, 6.9831, 1.0048, 2.872, 6.9768,
    1.6331, 4.3297, 2.4366, 6.3773, 6.0068, 3.4479, 3.1981, 1.6548, 6.61, 1.1947, 4.2953, 6.9854, 1.5213,
    1.7616, 1.0579, 4.1275, 1.4823, 2.0026, 5.9477, 4.1432, 6.5305, 6.1398, 6.9999, 6.1684, 1.1199, 2.0975,
    6.685, 6.9992, 2.3432, 6.2128, 1.2505, 6.9996, 6.8644, 1.0636, 1.0, 1.0, 1.1234,
]


def test_dynamic_cfg_schedule_matches_appendix_a():
    guider = DynamicCFG(scale=6, exp=5, num_steps=50)
    got = [round(guider.scale_at(50 - t), 4) for t in range(999, 0, -20)]
    assert got == DYNAMIC_CFG_APPENDIX_A
    # and it is the formula, evaluated in Python floats
    assert dynamic_cfg_scale(6, 5, 50, 13) == 1 + 6 * (1 - math.cos(math.pi * (13 / 50) ** 5)) / 2


def test_cfg_batches_uncond_first_and_mixes_x0():
    x = torch.arange(6.0).reshape(2, 3)
    cond = {"crossattn": torch.ones(2, 4), "concat": torch.full((2, 1), 7.0), "vector": torch.ones(2, 2), "ofs": 2}
    uc = {"crossattn": torch.zeros(2, 4), "concat": torch.full((2, 1), 7.0), "vector": torch.zeros(2, 2), "ofs": 2}
    xx, ss, cc = VanillaCFG(3.0).prepare_inputs(x, torch.tensor([0.1, 0.2]), cond, uc)
    assert torch.equal(xx, torch.cat([x, x])) and ss.tolist() == pytest.approx([0.1, 0.2, 0.1, 0.2])
    assert torch.equal(cc["crossattn"], torch.cat([uc["crossattn"], cond["crossattn"]]))
    assert cc["vector"][:2].sum() == 0 and cc["ofs"] == 2 and cc["concat"].shape == (4, 1)
    denoised = torch.cat([torch.zeros(2, 3), torch.ones(2, 3)])  # uncond half 0, cond half 1
    assert torch.equal(VanillaCFG(3.0)(denoised, None), torch.full((2, 3), 3.0))
    assert torch.equal(VanillaCFG(3.0)(denoised, None, scale=1.5), torch.full((2, 3), 1.5))
    assert torch.equal(IdentityGuider()(x, None), x)
    with pytest.raises(UsageError, match="ofs"):
        VanillaCFG(3.0).prepare_inputs(x, torch.tensor([0.1, 0.2]), cond, {**uc, "ofs": 3})
