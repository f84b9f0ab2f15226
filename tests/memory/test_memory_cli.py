"""`cogvid plan`, the memory line of --dry-run, --offload/--memory on the command line, and out-of-memory
errors (exit 4 with the stage, the plan's estimate and what to try)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from cogvid.cli.app import app

runner = CliRunner()


def _cogvid(*args: str) -> tuple[subprocess.CompletedProcess, bool]:
    """Run the CLI in a fresh interpreter; also says whether torch got imported."""
    code = (
        "import sys\nfrom cogvid.cli.app import main\n"
        f"sys.argv = ['cogvid', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "sys.stderr.write('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, timeout=120)
    return result, result.stderr.endswith("NO-TORCH")


def test_plan_lists_every_mode_without_torch_or_weights():
    result, no_torch = _cogvid("plan", "-m", "cogvideox-5b", "--json")
    assert no_torch and result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "cogvideox-5b" and report["picked"] is None
    settings = [(p["offload"], p["vae_tiling"]) for p in report["plans"]]
    assert settings[:4] == [("none", False), ("text", False), ("model", False), ("blocks", False)] and len(settings) == 8
    none = report["plans"][0]
    assert [s["stage"] for s in none["stages"]] == ["text", "denoising", "decoding"]
    assert none["video_tokens"] == 13 * 30 * 45 and none["text_tokens"] == 226 and none["dtype"] == "bf16"
    assert none["stages"][0]["on_device"] == ["t5", "dit", "vae"]
    assert report["plans"][2]["stages"][1]["on_device"] == ["dit"]  # model: only the DiT while denoising


def test_plan_table_and_what_a_budget_picks():
    result = runner.invoke(app, ["plan", "-m", "cogvideox1.5-5b", "--memory", "24GB"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cogvideox1.5-5b: 81 frames 1360x768 (44880 + 224 tokens), bf16 on cuda")
    assert "denoising" in lines[1] and "host RAM" in lines[1]
    assert lines[-1].startswith("memory: 24.0 GiB free -> --offload text --vae-tiling: peak")
    one = runner.invoke(app, ["plan", "-m", "cogvideox-5b-i2v", "--offload", "model", "--no-vae-tiling", "--quantize", "int8wo"])
    assert one.exit_code == 0, one.output
    assert "image" in one.stdout and "DiT int8" in one.stdout and "--offload model on cuda" in one.stdout


def test_plan_refuses_bad_values():
    bad_mode = runner.invoke(app, ["plan", "-m", "cogvideox-5b", "--offload", "blocs"])
    assert bad_mode.exit_code == 2 and "did you mean 'blocks'" in bad_mode.output
    bad_size = runner.invoke(app, ["plan", "-m", "cogvideox-5b", "--size", "512x512"])
    assert bad_size.exit_code == 2 and "480x720" in bad_size.output
    bad_budget = runner.invoke(app, ["plan", "-m", "cogvideox-5b", "--memory", "plenty"])
    assert bad_budget.exit_code == 2 and "--memory" in bad_budget.output
    bare = runner.invoke(app, ["t2v", "a cat", "--offload"])
    assert bare.exit_code == 2 and "requires an argument" in bare.output


def test_dry_run_shows_the_memory_plan():
    auto, no_torch = _cogvid("t2v", "a cat", "-m", "cogvideox-5b", "--dry-run")
    assert no_torch and auto.returncode == 0, auto.stderr
    assert "memory: --offload none: peak" in auto.stdout and "--memory auto picks" in auto.stdout
    sized = runner.invoke(app, ["t2v", "a cat", "-m", "cogvideox-5b", "--dry-run", "--memory", "12GB", "--json"])
    record = json.loads(sized.stdout)
    assert record["memory"]["plan"]["offload"] == "blocks" and "12.0 GiB free" in record["memory"]["summary"]
    assert record["request"]["model"]["offload"] is None  # decided when it runs, recorded in the sidecar then
    too_small = runner.invoke(app, ["t2v", "a cat", "-m", "cogvideox1.5-5b", "--dry-run", "--memory", "4GB"])
    assert too_small.exit_code == 4 and "no plan fits in 4.0 GiB" in too_small.output


def test_offload_runs_and_is_recorded(tmp_path):
    result = runner.invoke(app, ["t2v", "a red ball", "--steps", "1", "--frames", "9", "--offload", "blocks",
                                 "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(Path(json.loads(result.stdout)["sidecar"]).read_text())
    assert sidecar["request"]["model"]["offload"] == "blocks" and sidecar["vae_tiling"] is False
    assert sidecar["request"]["vae_tiling"] is False  # a replay decodes the same way
    from cogvid.sidecar import replay_request

    sidecar_path = json.loads(result.stdout)["sidecar"]
    replay = replay_request(sidecar_path)
    assert replay.model.offload is None and replay.vae_tiling is False  # the offload mode is this machine's choice again
    assert replay_request(sidecar_path, model_changes={"offload": "model"}).model.offload == "model"


def test_out_of_memory_exits_4_with_the_stage_the_estimate_and_what_to_try(tmp_path, monkeypatch):
    from cogvid.vae.autoencoder import VideoAutoencoder

    def no_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 35.31 GiB")

    monkeypatch.setattr(VideoAutoencoder, "decode", no_memory)
    result = runner.invoke(app, ["t2v", "a red ball", "--steps", "1", "--frames", "9", "--out", str(tmp_path)])
    assert result.exit_code == 4, result.output
    assert "out of memory on cpu while decoding the video (the memory plan estimated" in result.output
    assert "activations" in result.output and "hint:" in result.output and "cogvid plan" in result.output
    assert not list(tmp_path.rglob("*.mp4"))
