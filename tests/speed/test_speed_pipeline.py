"""Speed options through the Python API and the CLI, end to end on the test model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cogvid
from cogvid.cli.app import app
from cogvid.registry import get_model
from cogvid.speed.calibration import CALIBRATION_FILE

runner = CliRunner()
PROMPT = "a red ball moving left"


@pytest.fixture(scope="module")
def pipe():
    return cogvid.load(device="cpu")


def _video(pipe, **extra):
    return pipe.generate(PROMPT, seed=5, steps=6, num_frames=9, **extra)


def test_everything_off_changes_nothing(pipe):
    """No speed option: SAT's own layer loop runs, and the sidecar has no speed fields."""
    assert pipe.engine.network.speed_blocks is None
    video = _video(pipe)
    assert "speed" not in video.metadata and "step_cache" not in video.metadata
    assert video.metadata["request"]["cache"] is None


def test_a_step_cache_is_recorded_and_leaves_the_next_video_exact(pipe):
    plain = _video(pipe)
    cached = _video(pipe, cache="fbcache:10")  # a threshold no residual change reaches: skip all but first and last
    assert cached.metadata["step_cache"] == {"setting": "fbcache:10", "dit_forwards": 6, "ran": 2, "skipped": 4,
                                             "blocks_run": 2 * 2 + 4 * 1, "blocks_total": 12}
    assert cached.metadata["request"]["cache"] == "fbcache:10"
    assert not np.array_equal(cached.frames, plain.frames)
    assert np.array_equal(_video(pipe).frames, plain.frames)  # the cache went with its video
    assert pipe.engine.network.speed_blocks is None


def test_quantized_model_with_auto_attention_through_the_api():
    fast = cogvid.load(device="cpu", quantize="int8dq", attention="auto")
    video = _video(fast)
    assert video.metadata["speed"] == {"compile": False, "quantize": "int8dq", "quantize_text": False, "attention": "sdpa",
                                       "quantized_layers": 1 + 2 + 1 + 2 * 4}
    assert video.metadata["request"]["model"]["quantize"] == "int8dq"
    assert video.frames.shape == (9, 48, 64, 3)


def test_quantize_text_quantizes_t5_when_it_loads():
    fast = cogvid.load(device="cpu", quantize="int8wo", quantize_text=True)
    embedder = fast.engine.conditioner.embedders[0]
    embedder.load()
    kinds = {type(module.weight).__name__ for module in embedder.transformer.modules() if isinstance(module, torch.nn.Linear)}
    assert kinds == {"Int8Tensor"}


def test_device_problems_are_refused_before_loading(monkeypatch):
    from cogvid import pipeline

    monkeypatch.setattr(pipeline.VideoDiffusionEngine, "from_config", lambda *a, **k: pytest.fail("loaded"))
    from torch._inductor import config as inductor

    with inductor.patch({"cpp.cxx": (None, "no-such-compiler-g++")}), pytest.raises(cogvid.CogvidError, match="C\\+\\+ compiler"):
        cogvid.load(device="cpu", compile=True)


def test_calibrate_writes_beside_the_model_and_teacache_then_runs(tmp_path):
    folder = get_model("test-tiny").model_dir()
    calibration = folder / CALIBRATION_FILE
    try:
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("a red ball moving left\n# a comment\na blue cube moving up\n", encoding="utf-8")
        result = runner.invoke(app, ["cache", "calibrate", "--prompts", str(prompts), "--steps", "6", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert Path(result.stdout.strip()) == calibration
        record = json.loads(calibration.read_text(encoding="utf-8"))
        assert record["model"] == "test-tiny" and record["prompts"] == 2 and record["points"] == 2 * 5
        assert len(record["coefficients"]) == 5 and "fitted to 10 steps of 2 runs" in result.stderr
        out = tmp_path / "out"
        result = runner.invoke(app, ["t2v", PROMPT, "--cache", "teacache:0.3", "--steps", "6", "--device", "cpu", "-o", str(out), "--json"])
        assert result.exit_code == 0, result.output
        sidecar = json.loads(Path(json.loads(result.stdout)["sidecar"]).read_text(encoding="utf-8"))
        assert sidecar["request"]["cache"] == "teacache:0.3"
        stats = sidecar["step_cache"]
        assert stats["dit_forwards"] == 6 and stats["ran"] + stats["skipped"] == 6 and stats["ran"] >= 2
    finally:
        calibration.unlink(missing_ok=True)


def test_the_demo_model_ships_its_calibration():
    from cogvid.prepare import resolve_model
    from cogvid.request import ModelChoice
    from cogvid.speed.calibration import teacache_coefficients

    coefficients, source = teacache_coefficients(resolve_model(ModelChoice(name="cogvideox-tiny")))
    assert len(coefficients) == 5 and source.endswith(CALIBRATION_FILE)


def test_calibrating_an_image_to_video_model_needs_images():
    from types import SimpleNamespace

    from cogvid.errors import UsageError
    from cogvid.speed.calibrate import record_changes

    i2v = SimpleNamespace(name="some-i2v", spec=SimpleNamespace(task="i2v"))
    with pytest.raises(UsageError, match="needs an image") as caught:
        record_changes(i2v, ["a dog turns its head"])
    assert "@@" in caught.value.hint
