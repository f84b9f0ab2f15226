"""Offload modes on CPU: the same frames as ``none``, and each part on the device exactly when its mode says.

A part away from the device has ``meta`` placeholders for weights (its host copy is elsewhere), so
"on the device" is read from the engine's own tensors, not from bookkeeping: a part that should be
away and were used anyway would fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cogvid
from cogvid.memory_plan import parts_on_device

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from e2e_reference import write_tiny_i2v_model  # noqa: E402

MODES = ("none", "text", "model", "blocks")


def _resident(module: torch.nn.Module) -> bool | None:
    """True if every tensor of ``module`` is real, False if every one is a meta placeholder (None: mixed)."""
    flags = {t.is_meta for t in [*module.parameters(), *module.buffers()] if t.numel()}
    return None if len(flags) != 1 else not flags.pop()


def _where(engine) -> dict[str, bool | None]:
    t5 = engine.conditioner.embedders[0].transformer
    layers = engine.network.transformer.layers
    return {
        "t5": _resident(t5) if t5 is not None else False,
        "dit": _resident(engine.network),
        "dit layers": [_resident(layer) for layer in layers],
        "vae": _resident(engine.first_stage),
    }


def _expected(mode: str, stage: str, layers: int) -> dict[str, object]:
    on = parts_on_device(mode, stage)
    if mode == "blocks":  # shared weights on the device (T5's only while encoding), layers streamed: none yet
        return {"t5": None if "t5 (shared)" in on else False, "dit": None, "dit layers": [False] * layers, "vae": "vae" in on}
    return {"t5": "t5" in on, "dit": "dit" in on, "dit layers": ["dit" in on] * layers, "vae": "vae" in on}


@pytest.fixture(scope="module")
def runs():
    """One tiny video per mode, with where every part was at each stage and during the DiT's layers."""
    torch.set_num_threads(2)
    results = {}
    for mode in MODES:
        pipe = cogvid.load("test-tiny", device="cpu", offload=mode)
        engine = pipe.engine
        seen: list[tuple[str, dict]] = []
        engine.placement.log = lambda stage, _, engine=engine, seen=seen: seen.append((stage, _where(engine)))
        during: dict[str, list[list[int]]] = {"dit": [], "t5": []}
        for name, streamer in engine.placement.streamers.items():  # blocks: T5 is loaded (on the host) already
            stacks = {"dit": engine.network.transformer.layers, "t5": engine.conditioner.embedders[0].transformer.encoder.block}
            streamer.log = lambda move, index, name=name, stacks=stacks: during[name].append(
                [i for i, layer in enumerate(stacks[name]) if _resident(layer)])
        video = pipe.generate("a red ball", steps=2, seed=3, num_frames=9)
        second = pipe.generate("a blue cube", steps=1, seed=4, num_frames=9)  # parts come back for the next video
        results[mode] = (pipe, video, second, seen, during)
    return results


@pytest.mark.parametrize("mode", MODES[1:])
def test_frames_equal_no_offload_exactly(runs, mode):
    _, reference, reference_2, _, _ = runs["none"]
    _, video, second, _, _ = runs[mode]
    assert np.array_equal(video.frames, reference.frames)
    assert torch.equal(video.latents, reference.latents)
    assert np.array_equal(second.frames, reference_2.frames)
    assert video.metadata["request"]["model"]["offload"] == mode  # the sidecar records the mode that ran


@pytest.mark.parametrize("mode", MODES[1:])
def test_each_part_is_on_the_device_only_in_its_stages(runs, mode):
    pipe, _, _, seen, _ = runs[mode]
    layers = len(pipe.engine.network.transformer.layers)
    assert [stage for stage, _ in seen] == ["text", "denoising", "decoding"] * 2
    for stage, where in seen:
        assert where == _expected(mode, stage, layers), (stage, where)


@pytest.mark.parametrize("stack", ["dit", "t5"])
def test_blocks_streams_at_most_two_layers(runs, stack):
    pipe, _, _, _, during = runs["blocks"]
    layers = {"dit": pipe.engine.network.transformer.layers, "t5": pipe.engine.conditioner.embedders[0].transformer.encoder.block}[stack]
    assert during[stack], "the streamer moved nothing"
    assert max(len(resident) for resident in during[stack]) <= 2
    assert {i for resident in during[stack] for i in resident} == set(range(len(layers)))  # every layer came
    assert not any(_resident(layer) for layer in layers)  # and left after the last use


def test_model_offload_keeps_nothing_on_the_device_after_loading():
    pipe = cogvid.load("test-tiny", device="cpu", offload="model")
    where = _where(pipe.engine)
    assert (where["t5"], where["dit"], where["vae"]) == (False, False, False)
    assert pipe.engine.offload == "model"


@pytest.mark.slow
def test_image_to_video_moves_the_vae_in_for_the_image(tmp_path):
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    yamls = write_tiny_i2v_model(tmp_path)
    frames = {}
    for mode in ("none", "model"):
        pipe = cogvid.load(configs=yamls, device="cpu", offload=mode)
        seen = []
        pipe.engine.placement.log = lambda stage, _, pipe=pipe, seen=seen: seen.append((stage, _where(pipe.engine)["vae"]))
        frames[mode] = pipe.generate("a dog", image=picture, steps=1, seed=0).frames
    assert seen == [("text", False), ("image", True), ("denoising", False), ("decoding", True)]
    assert np.array_equal(frames["model"], frames["none"])


def test_old_boolean_offload_reads_as_model():
    from cogvid.request import ModelChoice

    assert ModelChoice(offload=True).offload == "model"
    assert ModelChoice(offload=False).offload is None  # the old default: let --memory decide
    assert ModelChoice.from_json({"offload": True}).offload == "model"
    with pytest.raises(cogvid.errors.UsageError, match="unknown offload mode") as error:
        ModelChoice(offload="block")
    assert "did you mean 'blocks'" in error.value.hint
