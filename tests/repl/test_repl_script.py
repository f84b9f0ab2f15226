"""``cogvid repl`` with stdin not a terminal: one line at a time, the model loaded once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

SCRIPT = """\
a red ball
/set steps 3
/nope
/set steps abc
/set frames 10
/seed 7

a blue cube
/show
"""


def _repl(stdin: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cogvid", "repl", *args],
        input=stdin, capture_output=True, text=True, env={**os.environ}, timeout=timeout,
    )


@pytest.mark.slow
def test_scripted_session_loads_once_and_applies_settings(tmp_path):
    out = tmp_path / "out"
    result = _repl(SCRIPT, "--steps", "2", "--frames", "9", "--out", str(out))
    err = result.stderr
    videos = [line for line in result.stdout.splitlines() if line.endswith(".mp4")]
    assert len(videos) == 2, result.stdout + err
    assert "red-ball" in videos[0] and "blue-cube" in videos[1]

    # one load for both prompts; each prompt reports its own time, which has no loading in it
    assert err.count("loading model...") == 1, err
    load_seconds = float(re.search(r"✓ loading model \(([\d.]+) s\)", err).group(1))
    generation_seconds = [float(s) for s in re.findall(r"generated in ([\d.]+) s", err)]
    assert len(generation_seconds) == 2
    print(f"\nload {load_seconds:.1f} s, generations {generation_seconds[0]:.1f} s and {generation_seconds[1]:.1f} s")

    # `/set steps 3` and `/seed 7` change the second video only
    first, second = (json.loads((out / path).with_suffix(".json").read_text()) for path in videos)
    assert (first["steps"], second["steps"]) == (2, 3)
    assert second["seed"] == 7
    assert second["frames"] == 9

    # an unknown command prints an error and the help; a bad value an error; the session goes on
    assert "error: unknown command /nope" in err
    assert err.index("/set KEY VALUE") > err.index("unknown command /nope")
    assert "error: steps must be a whole number, not 'abc'" in err
    assert re.search(r"^steps\s+3$", err, re.MULTILINE), err  # /show after the bad value: still 3
    assert "error: this model cannot make 10 frames" in err
    assert "/set frames 9 or 17" in err  # the hint speaks the REPL's language, not the options'

    # three failed lines out of nine: the script's exit status says so
    assert result.returncode == 1
    assert "error: 3 of 9 lines failed" in err


@pytest.mark.slow
def test_scripted_session_without_failures_exits_zero_and_rejects_a_bad_option(tmp_path):
    clean = _repl("/set frames 17\n/show\n/quit\nnever reached\n", "--out", str(tmp_path / "out"))
    assert clean.returncode == 0, clean.stderr
    assert "frames = 17" in clean.stderr
    assert re.search(r"^steps\s+\d+ \(model default\)$", clean.stderr, re.MULTILINE)
    assert clean.stdout == ""  # /quit stopped before the prompt

    bad = _repl("a prompt\n", "--frames", "10")
    assert bad.returncode == 2 and "loading model" not in bad.stderr  # checked before loading


@pytest.mark.slow
def test_lora_reloads_the_model_with_it_and_none_takes_it_off(tmp_path):
    from fixtures.tiny_lora import write_tiny_lora

    from cogvid.checkpoint import read_state_dict, split_engine_state
    from cogvid.registry import get_model

    demo = get_model("test-tiny").weight_paths()["transformer"]
    lora = tmp_path / "lora"
    write_tiny_lora(lora, split_engine_state(read_state_dict(demo))["dit"], 4, seed=3)
    out = tmp_path / "out"
    script = f"/lora {tmp_path / 'missing'}\n/lora {lora}:0.5\na red ball\n/lora none\n/show\n"
    result = _repl(script, "--steps", "2", "--frames", "9", "--seed", "1", "--out", str(out))
    err = result.stderr
    assert "error: LoRA checkpoint" in err and "e.g. /lora " in err  # a bad path: nothing reloads
    assert err.count("loading model...") == 3, err  # start, with the LoRA, without it
    assert f"lora = {lora}:0.5" in err
    video = next(line for line in result.stdout.splitlines() if line.endswith(".mp4"))
    sidecar = json.loads((out / video).with_suffix(".json").read_text())
    assert sidecar["loras"] == [{"path": str(lora), "scale": 0.5}]
    assert re.search(r"^lora\s+none$", err, re.MULTILINE)
    assert result.returncode == 1 and "1 of 5 lines failed" in err


@pytest.mark.slow
def test_vae_tiling_applies_to_every_video_of_the_session(tmp_path):
    out = tmp_path / "out"
    result = _repl("a red ball\n", "--steps", "2", "--frames", "9", "--vae-tiling", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (video,) = [line for line in result.stdout.splitlines() if line.endswith(".mp4")]
    assert json.loads((out / video).with_suffix(".json").read_text())["vae_tiling"] is True
