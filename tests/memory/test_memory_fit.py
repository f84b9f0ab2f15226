"""--memory auto: the fastest plan that fits the free memory (injected here), never one over the budget."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cogvid.errors import DeviceError, UsageError
from cogvid.memory_plan import CANDIDATES, GIB, fit, model_plans, parse_budget, plan_for, settle, usable_bytes
from cogvid.prepare import PreparedRequest, resolve_model, resolve_sampler
from cogvid.request import GenerationRequest, ModelChoice

RELEASED = ["cogvideox-2b", "cogvideox-5b", "cogvideox-5b-i2v", "cogvideox1.5-5b", "cogvideox1.5-5b-i2v"]


def _prepared(name: str, frames: int | None = None, **choice) -> PreparedRequest:
    """A prepared request for a released model's default video, without its weights or an image."""
    model = resolve_model(ModelChoice(name, **choice))
    spec = model.spec
    request = GenerationRequest(prompt="a cat", frames=frames or spec.default_frames, model=model.choice, seed=0)
    sampler = resolve_sampler(model.cfg.model.sampler_config, None, None, None)
    height, width = model.entry.height, model.entry.width
    return PreparedRequest(request, model, sampler, height, width, spec.latent_frames(request.frames))


def _picked(prepared: PreparedRequest, free_gib: float) -> tuple[str, bool]:
    (settled,), _ = settle([prepared], int(free_gib * GIB))
    return settled.request.model.offload, settled.request.vae_tiling


def test_auto_picks_differently_for_12_24_48_80_gib():
    prepared = _prepared("cogvideox1.5-5b")  # 81 frames at 1360x768
    picks = {free: _picked(prepared, free) for free in (12, 24, 48, 80)}
    assert picks == {80: ("none", False), 48: ("text", False), 24: ("text", True), 12: ("blocks", True)}
    for free, (mode, tiling) in picks.items():
        assert plan_for(prepared, offload=mode, vae_tiling=tiling).peak <= usable_bytes(free * GIB) < free * GIB


def test_five_b_picks_a_smaller_mode_as_memory_shrinks():
    prepared = _prepared("cogvideox-5b")
    assert [_picked(prepared, free) for free in (80, 24, 16, 12, 5)] == [
        ("none", False), ("text", False), ("model", False), ("blocks", False), ("blocks", True)]


@pytest.mark.parametrize("name", RELEASED)
def test_never_picks_a_plan_over_the_budget_and_more_memory_never_picks_slower(name):
    plans = model_plans(resolve_model(ModelChoice(name)))  # remembers each candidate's plan
    order = []
    for free in range(2, 101, 2):
        result = fit(plans, free * GIB)
        if result.plan is None:
            assert all(plan.peak > usable_bytes(free * GIB) for plan in result.tried)
            order.append(len(CANDIDATES))
            continue
        assert result.plan.peak <= result.usable < free * GIB
        order.append(CANDIDATES.index((result.plan.offload, result.plan.vae_tiling)))
    assert order == sorted(order, reverse=True)
    assert order[-1] == 0  # 100 GiB runs everything on the GPU


def test_explicit_settings_win():
    prepared = _prepared("cogvideox1.5-5b", offload="model")
    (settled,), note = settle([prepared], 80 * GIB)
    assert (settled.request.model.offload, settled.request.vae_tiling) == ("model", False)  # tiling not needed
    assert settled.model.choice.offload == "model"  # what load() reads
    pinned = dataclasses.replace(prepared, request=prepared.request.replace(vae_tiling=False))
    (settled,), note = settle([pinned], 12 * GIB)  # both given: runs as asked, says it may not fit
    assert (settled.request.model.offload, settled.request.vae_tiling) == ("model", False)
    assert "running as asked" in note
    untiled = _prepared("cogvideox1.5-5b")
    untiled = dataclasses.replace(untiled, request=untiled.request.replace(vae_tiling=False))
    (settled,), _ = settle([untiled], 48 * GIB)
    assert (settled.request.model.offload, settled.request.vae_tiling) == ("text", False)


def test_nothing_fits_refuses_with_the_plan_and_a_hint():
    with pytest.raises(DeviceError) as error:
        settle([_prepared("cogvideox1.5-5b")], 6 * GIB)  # its denoising alone needs 7.6 GiB of activations and layers
    assert error.value.exit_code == 4
    assert "no plan fits in 6.0 GiB" in error.value.message
    assert "--offload blocks --vae-tiling" in error.value.message and "denoising" in error.value.message
    assert "--size" in error.value.hint


def test_no_budget_means_no_offload():
    for choice in ({"memory": "off"}, {"device": "cpu"}):
        (settled,), note = settle([_prepared("cogvideox-5b", **choice)], 6 * GIB)
        assert (settled.request.model.offload, settled.request.vae_tiling, note) == ("none", False, None)
    (settled,), note = settle([_prepared("cogvideox-5b")], None)  # no CUDA device to read
    assert settled.request.model.offload == "none"


def test_a_memory_size_is_the_budget_without_a_device():
    (settled,), note = settle([_prepared("cogvideox-5b", memory="24GB")], None)
    assert settled.request.model.offload == "text" and note.startswith("memory: 24.0 GiB free")


def test_load_time_pick_reads_the_free_memory(monkeypatch):
    """cogvid.load(offload=None) on CUDA fits the model's default video into the free memory."""
    import cogvid.devices
    from cogvid.pipeline import _offload_mode

    monkeypatch.setattr(cogvid.devices, "free_memory", lambda device, own=False: 16 * GIB)
    model = resolve_model(ModelChoice("cogvideox-5b"))
    mode, note = _offload_mode(model, torch.device("cuda"))
    assert mode == "model" and "16.0 GiB free on cuda" in note
    assert _offload_mode(model, torch.device("cpu")) == ("none", None)
    assert _offload_mode(resolve_model(ModelChoice("cogvideox-5b", offload="blocks")), torch.device("cuda")) == ("blocks", None)


def test_budgets_parse():
    assert parse_budget("auto") is None and parse_budget("off") is None
    assert parse_budget("24") == parse_budget("24GB") == parse_budget("24GiB") == parse_budget("24g") == 24 * GIB
    assert parse_budget("7.5GB") == int(7.5 * GIB)
    for bad in ("lots", "-3GB", "0"):
        with pytest.raises(UsageError):
            parse_budget(bad)
    with pytest.raises(UsageError, match="--memory"):
        ModelChoice(memory="lots")
    assert ModelChoice(memory="24GB").to_json()["memory"] == "24gb"


def test_out_of_memory_advice_names_what_shrinks_the_stage():
    from cogvid.memory_plan import oom_explainer

    explain = oom_explainer(_prepared("cogvideox1.5-5b"))
    estimate, hint = explain("decoding")
    assert estimate.startswith(" (the memory plan estimated 49.8 GiB for this stage")
    assert "--offload model (about 30.6 GiB)" in hint and "--vae-tiling" in hint  # fastest, then most frugal
    assert "--offload blocks" in explain("denoising")[1]
    assert explain("loading")[0] == ""  # no plan for the load: the hint alone
