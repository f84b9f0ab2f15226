"""Sampler selection, overrides, bad input, seeds, callbacks and cancellation."""

from __future__ import annotations

import inspect

import pytest
import torch
from fixtures.diffusion_toys import toy_inputs, toy_network
from omegaconf import OmegaConf

from cogvid.config import TARGETS, resolve_target
from cogvid.diffusion import SAMPLER_NAMES, build_sampler, sampler_config_with, sampler_params
from cogvid.diffusion.samplers import VPSDEDPMPP2MSampler
from cogvid.errors import Cancelled, ConfigError, UsageError

P = "sgm.modules.diffusionmodules."


def model_sampler_config(guider: dict | None = None, shift: float = 1.0):
    params = {
        "num_steps": 50,
        "verbose": True,
        "fixed_frames": 0,
        "discretization_config": {"target": P + "discretizer.ZeroSNRDDPMDiscretization", "params": {"shift_scale": shift}},
    }
    if guider is not None:
        params["guider_config"] = guider
    return OmegaConf.create({"target": P + "sampling.VPSDEDPMPP2MSampler", "params": params})


DYNAMIC = {"target": P + "guiders.DynamicCFG", "params": {"scale": 6, "exp": 5, "num_steps": 50}}


def video_denoiser(x, level, cond, idx, **extra):
    return toy_network(x, idx, cond, **extra)


@pytest.mark.parametrize("name", list(SAMPLER_NAMES))
def test_every_short_name_is_allow_listed_and_its_params_are_the_constructor_s(name):
    target = SAMPLER_NAMES[name]
    assert target in TARGETS
    cls = resolve_target(target)
    accepted = set(inspect.signature(cls).parameters) | set(inspect.signature(cls.__mro__[-2].__init__).parameters)
    assert set(sampler_params(target)) <= accepted - {"self", "base"}


def test_sampler_config_with_keeps_model_settings_and_drops_foreign_params():
    base = model_sampler_config(DYNAMIC, shift=3.0)
    node = sampler_config_with("heun-edm", base)
    assert node.target == P + "sampling.HeunEDMSampler"
    assert node.params.num_steps == 50 and node.params.guider_config == base.params.guider_config
    assert node.params.discretization_config.params.shift_scale == 3.0
    assert "fixed_frames" not in node.params
    assert sampler_config_with("ddim", base).params.fixed_frames == 0
    sampler = build_sampler(node)
    assert type(sampler).__name__ == "HeunEDMSampler" and sampler.num_steps == 50


def test_unknown_sampler_name_lists_known_names_and_the_closest():
    with pytest.raises(ConfigError) as error:
        sampler_config_with("dpmpp2", model_sampler_config(DYNAMIC))
    assert "dpmpp2" in str(error.value)
    assert "did you mean 'dpmpp2m'" in error.value.hint and "vpsde-dpmpp2m" in error.value.hint


def test_build_sampler_overrides_steps_and_guidance():
    sampler = build_sampler(model_sampler_config(DYNAMIC), num_steps=20, guidance=4.5)
    assert sampler.num_steps == 20 and sampler.guider.scale == 4.5 and sampler.guider.num_steps == 20
    assert build_sampler(model_sampler_config(DYNAMIC)).guider.scale == 6


@pytest.mark.parametrize("steps", [0, -1, 1001, 2.5, True])
def test_bad_step_counts_are_config_errors(steps):
    with pytest.raises(ConfigError, match="steps"):
        build_sampler(model_sampler_config(DYNAMIC), num_steps=steps)


def test_guidance_without_unconditional_input_and_negative_guidance():
    with pytest.raises(ConfigError, match="unconditional"):
        build_sampler(model_sampler_config(None), guidance=6.0)
    identity = {"target": P + "guiders.IdentityGuider"}
    with pytest.raises(ConfigError, match="unconditional"):
        build_sampler(model_sampler_config(identity), guidance=6.0)
    with pytest.raises(UsageError, match="negative"):
        build_sampler(model_sampler_config(DYNAMIC), guidance=-1.0)


def test_video_sampler_rejects_a_sigma_discretization():
    node = OmegaConf.create({
        "target": P + "sampling.VideoDDIMSampler",
        "params": {"num_steps": 5, "discretization_config": {"target": P + "discretizer.EDMDiscretization"}},
    })
    with pytest.raises(ConfigError, match="ZeroSNR"):
        build_sampler(node)


@pytest.mark.parametrize("name", ["vpsde-dpmpp2m", "euler-ancestral", "sde-dpmpp2m"])
def test_same_seed_same_run_and_no_global_rng(name):
    sampler = build_sampler(sampler_config_with(name, model_sampler_config(DYNAMIC)), num_steps=6)
    x, cond, uc = toy_inputs()
    x_before = x.clone()
    state = torch.get_rng_state()
    a = sampler(video_denoiser, x, cond, uc=uc, generator=torch.Generator().manual_seed(3))
    b = sampler(video_denoiser, x, cond, uc=uc, generator=torch.Generator().manual_seed(3))
    c = sampler(video_denoiser, x, cond, uc=uc, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator was never used
    assert torch.equal(x, x_before)  # the caller's noise is not modified


def test_vpsde_draws_97_noises_for_50_steps():
    sampler = build_sampler(model_sampler_config(DYNAMIC))
    generator = torch.Generator().manual_seed(0)
    x, cond, uc = toy_inputs()
    sampler(video_denoiser, x, cond, uc=uc, generator=generator)
    reference = torch.Generator().manual_seed(0)
    for _ in range(97):
        torch.randn(x.shape, generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())


@pytest.mark.parametrize("name", list(SAMPLER_NAMES))
def test_callback_once_per_step_and_cancel_propagates(name):
    sampler = build_sampler(sampler_config_with(name, model_sampler_config(DYNAMIC)), num_steps=7)
    x, cond, uc = toy_inputs()
    seen = []
    sampler(video_denoiser, x, cond, uc=uc, generator=torch.Generator().manual_seed(0),
            callback=lambda i, n, level: seen.append((i, n, level)))
    assert [(i, n) for i, n, _ in seen] == [(i, 7) for i in range(7)]
    assert all(isinstance(level, float) for _, _, level in seen)
    if "VP" in SAMPLER_NAMES[name] or "Video" in SAMPLER_NAMES[name]:
        # the DDPM timesteps, 999 first
        assert [level for _, _, level in seen] == [999.0, 856.0, 713.0, 570.0, 428.0, 285.0, 142.0]

    calls = []

    def denoiser(*args, **kwargs):
        calls.append(1)
        return video_denoiser(*args, **kwargs)

    def cancel_at_third(i, n, level):
        if i == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        sampler(denoiser, x, cond, uc=uc, generator=torch.Generator().manual_seed(0), callback=cancel_at_third)
    # stopped right after step 2: no evaluation of step 3 happened
    per_step = len(calls)
    sampler(denoiser, x, cond, uc=uc, generator=torch.Generator().manual_seed(0))
    assert per_step < len(calls) - per_step


def test_ofs_and_scale_one_reach_the_network():
    sampler = VPSDEDPMPP2MSampler(
        num_steps=3,
        discretization_config=model_sampler_config().params.discretization_config,
        guider_config=OmegaConf.create(DYNAMIC),
    )
    x, cond, uc = toy_inputs()
    batches = []

    def denoiser(x_in, level, c, idx, **extra):
        batches.append((x_in.shape[0], extra.get("ofs"), extra.get("scale_emb")))
        return video_denoiser(x_in, level, c, idx, **extra)

    ofs = torch.tensor([2.0])
    sampler(denoiser, x, cond, uc=uc, ofs=ofs, generator=torch.Generator().manual_seed(0))
    assert [b for b, _, _ in batches] == [2, 2, 2] and all(o is ofs for _, o, _ in batches)
    batches.clear()
    sampler(denoiser, x, cond, uc=uc, scale=1, scale_emb="emb", generator=torch.Generator().manual_seed(0))
    assert [b for b, _, _ in batches] == [1, 1, 1] and all(e == "emb" for _, _, e in batches)
