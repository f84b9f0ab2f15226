"""`cogvid batch` on the embedded tiny model: outputs, --resume, SIGKILL, failing lines, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fixtures.processes import sigint_as_in_a_terminal

from cogvid.batch import job_key, parse_prompt_file
from cogvid.request import GenerationRequest
from cogvid.cli.app import app

runner = CliRunner()
FAST = ["--steps", "2", "--frames", "9"]
FAST_DEFAULTS = GenerationRequest(steps=2, frames=9)
# Slow enough (~3 s a video on a fast machine) that a signal sent right after the first output
# lands while the second video is being made, however fast the machine.
SLOW = ["--steps", "1000", "--frames", "17"]


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model is fastest on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env() -> dict[str, str]:
    torchrun_names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in torchrun_names}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".cogvid-batch.lock")


def _sidecar_paths(out: Path) -> list[Path]:
    """Published sidecars (not the hidden temporaries they are written to first)."""
    return sorted(p for p in out.glob("*/*.json") if not p.name.startswith("."))


def _sidecars(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"_path": p} for p in _sidecar_paths(out)]


def _assert_complete_and_clean(out: Path, lines: list[int]) -> list[dict]:
    """Every prompt line has exactly one complete video + sidecar; no partial file anywhere."""
    sidecars = _sidecars(out)
    assert Counter(s["batch_line"] for s in sidecars) == Counter(lines)
    for sidecar in sidecars:
        video = sidecar["_path"].with_name(sidecar["file"])
        assert video.stat().st_size > 0
    names = [p.name for p in _files(out)]
    assert not [n for n in names if n.startswith(".")], names  # no temporaries, no index locks
    assert len([n for n in names if n.endswith(".mp4")]) == len(sidecars)  # no empty reservation, no orphan
    return sidecars


def test_batch_writes_every_prompt_and_resume_writes_nothing_new(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("\ufeffa red ball\r\n# not this one\r\n\r\na blue cube\r\na green cone\r\n".encode())
    out = tmp_path / "out"
    first = runner.invoke(app, ["batch", str(prompts), *FAST, "--out", str(out), "--json"])
    assert first.exit_code == 0, first.output
    results = [json.loads(line) for line in first.stdout.strip().splitlines()]
    assert [r["prompt"] for r in results] == ["a red ball", "a blue cube", "a green cone"]
    assert [r["seed"] for r in results] == [0, 3, 4]  # base seed 0 + 0-based line index
    sidecars = _assert_complete_and_clean(out, [1, 4, 5])
    expected_keys = {job_key(job.request, 0, "test-tiny") for job in parse_prompt_file(prompts, FAST_DEFAULTS)}
    assert {s["batch_key"] for s in sidecars} == {r["batch_key"] for r in results} == expected_keys
    assert all(s["steps"] == 2 and s["frames"] == 9 and s["model"] == "test-tiny" for s in sidecars)
    assert "batch summary" in first.stderr and "3 done" in first.stderr

    before = _files(out)
    again = runner.invoke(app, ["batch", str(prompts), *FAST, "--out", str(out), "--resume", "--json"])
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == ""
    assert _files(out) == before
    assert "3 skipped" in again.stderr and "loading model" not in again.stderr

    # A changed setting is a different video: only the changed line runs again.
    prompts.write_text("a red ball\n# not this one\n\na blue cube\na green cone\n", encoding="utf-8")
    changed = runner.invoke(app, ["batch", str(prompts), *FAST, "--out", str(out), "--resume", "--seed", "1", "--json"])
    assert changed.exit_code == 0, changed.output
    assert [json.loads(line)["seed"] for line in changed.stdout.strip().splitlines()] == [1, 4, 5]


def test_failing_lines_are_reported_and_the_rest_runs(tmp_path, monkeypatch):
    from cogvid.errors import GenerationError
    from cogvid.pipeline import VideoPipeline

    run = VideoPipeline.run

    def flaky(self, prepared, **kwargs):
        if prepared.request.prompt == "explodes":
            raise GenerationError("the sampler produced NaN", hint="lower the guidance")
        return run(self, prepared, **kwargs)

    monkeypatch.setattr(VideoPipeline, "run", flaky)
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        '{"prompt": "a red ball"}',
        '{"prompt": "too many frames", "frames": 10}',
        '{"prompt": "explodes"}',
        "{oops",
        '{"prompt": "t2v with an image", "image": "missing.png"}',
    ]
    jobs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(jobs), *FAST, "--out", str(out)])
    assert result.exit_code == 1, result.output
    err = result.stderr
    # Invalid lines are reported before the model loads; the runtime failure after it.
    for line in (2, 4, 5):
        assert err.index(f"line {line}:") < err.index("loading model")
    assert err.index("line 3: the sampler produced NaN") > err.index("loading model")
    assert "cannot make 10 frames" in err and "invalid JSON" in err and "image not found" in err
    assert "1 done" in err and "3 invalid" in err and "1 failed" in err
    assert "4 of 5 prompt line(s) failed: lines 2, 3, 4, 5" in err
    assert [Path(p).suffix for p in result.stdout.split()] == [".mp4"]
    _assert_complete_and_clean(out, [1])


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [(None, 3, "prompt file not found"), ("\ufeff# nothing\r\n\r\n", 2, "no prompts in")],
)
def test_missing_or_empty_prompt_file_is_one_clear_error(tmp_path, content, code, message):
    file = tmp_path / "prompts.txt"
    if content is not None:
        file.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(file), "--out", str(out)])
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output and "loading model" not in result.stderr
    assert not out.exists()


def test_sigkill_mid_run_then_resume_finishes_each_prompt_exactly_once(tmp_path):
    prompts, out = _three_fish(tmp_path), tmp_path / "out"
    cmd = [sys.executable, "-m", "cogvid", "batch", str(prompts), *SLOW, "--out", str(out)]
    proc = _start_and_wait_for_first_output(cmd, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert len(_sidecars(out)) < 3
    # What a kill in the middle of writing leaves: its write folder, unlocked, with a half-written video.
    day = next(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    (day / ".0099.writing").mkdir()
    (day / ".0099.writing" / "owner").write_text("12345 elsewhere\n")
    (day / ".0099.writing" / "0099-red-fish-s2.mp4").write_bytes(b"half a video")

    result = runner.invoke(app, ["batch", str(prompts), *SLOW, "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "partial file(s) left by an interrupted run" in result.stderr
    sidecars = _assert_complete_and_clean(out, [1, 2, 3])
    assert sorted(s["seed"] for s in sidecars) == [0, 1, 2]


def _three_fish(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one fish\ntwo fish\nred fish\n", encoding="utf-8")
    return prompts


def _start_and_wait_for_first_output(cmd: list[str], out: Path) -> subprocess.Popen:
    """Start a batch (SIGINT as in a terminal) and return once its first video is published."""
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_in_a_terminal
    )
    deadline = time.monotonic() + 120
    while not _sidecar_paths(out):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no output appeared: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    return proc


def test_ctrl_c_stops_cleanly_with_a_summary_and_exit_130(tmp_path):
    prompts, out = _three_fish(tmp_path), tmp_path / "out"
    cmd = [sys.executable, "-m", "cogvid", "batch", str(prompts), *SLOW, "--out", str(out)]
    proc = _start_and_wait_for_first_output(cmd, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "error: interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    sidecars = _sidecars(out)
    assert 1 <= len(sidecars) < 3
    _assert_complete_and_clean(out, [s["batch_line"] for s in sidecars])
    assert "batch summary" in stderr and f"{len(sidecars)} done" in stderr
    assert stdout.split() == [str(s["_path"].with_suffix(".mp4")) for s in sidecars]


@pytest.mark.slow
def test_torchrun_two_ranks_make_each_output_exactly_once(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first\nsecond\n# skip\nthird\n", encoding="utf-8")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "cogvid", "batch", str(prompts), *FAST, "--out", str(out),
    ]
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    sidecars = _assert_complete_and_clean(out, [1, 2, 4])
    jobs = parse_prompt_file(prompts, FAST_DEFAULTS)
    assert {s["batch_key"] for s in sidecars} == {job_key(job.request, 0, "test-tiny") for job in jobs}
    assert all(s["device"] == "cpu" for s in sidecars)
    assert run.stderr.count("batch summary") == 1  # rank 0 only, with every rank's results
    assert "3 done" in run.stderr
    assert sorted(Path(p).name for p in run.stdout.split()) == sorted(s["file"] for s in sidecars)

    before = _files(out)
    again = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _files(out) == before and "3 skipped" in again.stderr


def test_vae_tiling_is_recorded_and_part_of_the_resume_key(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n", encoding="utf-8")
    out = tmp_path / "out"
    base = ["batch", str(prompts), *FAST, "--out", str(out), "--json"]
    tiled = runner.invoke(app, [*base, "--vae-tiling"])
    assert tiled.exit_code == 0, tiled.output
    record = json.loads(tiled.stdout.strip())
    assert record["vae_tiling"] is True
    assert json.loads(Path(record["sidecar"]).read_text())["vae_tiling"] is True
    again = runner.invoke(app, [*base, "--vae-tiling", "--resume"])
    assert again.exit_code == 0 and again.stdout.strip() == ""  # already complete
    plain = runner.invoke(app, [*base, "--resume"])  # untiled decoding: different pixels, a new video
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout.strip())["vae_tiling"] is False
    assert len(_sidecars(out)) == 2


@pytest.mark.slow
def test_the_1_5_frame_schedule_is_part_of_the_resume_key(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from e2e_reference import write_tiny_v15_t2v_model

    model_yaml, inference_yaml = write_tiny_v15_t2v_model(tmp_path / "v15")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n", encoding="utf-8")
    out = tmp_path / "out"
    base = ["batch", str(prompts), "--config", str(model_yaml), "--config", str(inference_yaml),
            "--steps", "2", "--frames", "17", "--out", str(out), "--json"]
    original = runner.invoke(app, base)
    assert original.exit_code == 0, original.output
    assert json.loads(original.stdout.strip())["frames"] == 20  # the original's decode: 4 frames a latent
    again = runner.invoke(app, [*base, "--original-frames", "--resume"])
    assert again.exit_code == 0 and again.stdout.strip() == ""  # the default, already made
    diffusers = runner.invoke(app, [*base, "--diffusers-frames", "--resume"])
    assert diffusers.exit_code == 0, diffusers.output
    assert json.loads(diffusers.stdout.strip())["frames"] == 17  # a different video: made, not skipped
    assert len(_sidecars(out)) == 2
