"""`cogvid t2v` / `cogvid i2v` on the embedded tiny model: files, sidecars, naming, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fixtures.processes import sigint_as_in_a_terminal

from cogvid.cli.app import app
from cogvid.video import read_video

runner = CliRunner()
FAST = ["--steps", "2", "--seed", "7"]


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


@pytest.mark.slow
def test_t2v_writes_mp4_and_sidecar_and_never_overwrites(tmp_path):
    out = tmp_path / "out"
    first = runner.invoke(app, ["t2v", "a red ball bouncing", *FAST, "--out", str(out), "--json"])
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout.strip().splitlines()[-1])
    video_path = Path(result["path"])
    assert video_path.name == "0000-a-red-ball-bouncing-s7.mp4" and video_path.parent.parent == out
    frames, fps = read_video(video_path)
    assert frames.shape == (17, 48, 64, 3) and fps == pytest.approx(8)
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    for key in ("prompt", "negative_prompt", "model", "sampler", "steps", "guidance", "seed", "height", "width",
                "frames", "fps", "loras", "cogvid_version", "timings"):
        assert key in sidecar, key
    assert sidecar["steps"] == 2 and sidecar["seed"] == 7 and sidecar["model"] == "test-tiny"

    second = runner.invoke(app, ["t2v", "a red ball bouncing", *FAST, "--out", str(out), "--frames", "9", "--fps", "4"])
    assert second.exit_code == 0, second.output
    new_path = Path(second.stdout.strip().splitlines()[-1])
    assert new_path != video_path and new_path.name.startswith("0001-")
    assert read_video(video_path)[0].shape[0] == 17  # the first video is untouched
    frames, fps = read_video(new_path)
    assert frames.shape[0] == 9 and fps == pytest.approx(4)
    assert len(_files(out)) == 4


@pytest.mark.slow
def test_same_seed_same_video_and_num_videos(tmp_path):
    result = runner.invoke(app, ["t2v", "a cat", *FAST, "--out", str(tmp_path), "-n", "2", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["seed"] for r in lines] == [7, 8]
    again = runner.invoke(app, ["t2v", "a cat", *FAST, "--out", str(tmp_path), "--json"])
    third = json.loads(again.stdout.strip().splitlines()[-1])
    a, _ = read_video(lines[0]["path"])
    b, _ = read_video(third["path"])
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["t2v", "x", "--frames", "50"], 2, "cannot make 50 frames"),
        (["t2v", "x", "--size", "500x700"], 2, "48x64 (HxW) only"),
        (["t2v", "x", "--size", "big"], 2, "bad size"),
        (["t2v", "x", "--sampler", "nope"], 2, "unknown sampler"),
        (["t2v", "x", "--model", "cogvideox-2b"], 3, "weights of cogvideox-2b not found"),
        (["t2v", "x", "--model", "cogvideox-5b-i2v"], 2, "needs an image"),
        (["i2v", "missing.png", "x", "--model", "test-tiny"], 3, "image not found"),
        (["t2v", "x", "--device", "cuda:7"], 4, "CUDA"),
    ],
)
def test_bad_input_one_message_right_code_no_files(tmp_path, args, code, message):
    if "--device" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    out = tmp_path / "out"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == code, result.output
    assert message in result.output and result.output.count("error:") == 1
    assert "Traceback" not in result.output
    assert not out.exists() or _files(out) == []


def test_corrupt_image_is_rejected_before_loading(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = runner.invoke(app, ["i2v", str(bad), "x", "--model", "cogvideox-5b-i2v", "--out", str(tmp_path / "o")])
    assert result.exit_code == 3 and "cannot read image" in result.output


def test_missing_weights_message_lists_the_expected_layout(tmp_path):
    result = runner.invoke(app, ["t2v", "x", "-m", "cogvideox1.5-5b", "--weights", str(tmp_path)])
    assert result.exit_code == 3
    assert str(tmp_path / "cogvideox1.5-5b" / "transformer_t2v" / "latest") in result.output
    assert "expected layout" in result.output


@pytest.mark.slow
def test_ctrl_c_during_generation_leaves_no_files(tmp_path):
    """SIGINT while denoising: exit 130, one message, nothing written."""
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogvid", "t2v", "a slow one", "--steps", "1000", "--out", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ},
        preexec_fn=sigint_as_in_a_terminal,
    )
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline:
        line = proc.stderr.readline()
        seen += line
        if line.strip() == "denoising...":  # 1000 steps: seconds of denoising ahead, even on a fast machine
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest
    assert not out.exists() or _files(out) == []


@pytest.mark.slow
def test_unknown_words_and_truncation_are_plain_warnings(tmp_path):
    out = tmp_path / "out"
    prompt = "a purple circle moving left " + "on a white background " * 3  # 17 words + </s>: over the demo's 16 tokens
    result = runner.invoke(app, ["t2v", prompt, "-m", "cogvideox-tiny", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning: prompt 1: this model's tokenizer does not know 'purple'; the model cannot read it" in result.stderr
    assert "warning: prompt 1 is 18 tokens long; only the first 16 (including </s>) are used, 2 tokens dropped" in result.stderr
    assert "Warning:" not in result.stderr and "text.py" not in result.stderr  # no raw Python warning lines
    assert len(_files(out)) == 2  # a warning never stops the video
