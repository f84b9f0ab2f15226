"""`torchrun -m cogvid t2v|batch --parallel ...`: the ranks make each video together and rank 0 writes it once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cogvid.cli.app import app
from cogvid.video import read_video

runner = CliRunner()
FAST = ["--steps", "2", "--frames", "9"]


def _env() -> dict[str, str]:
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in names}, "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cogvid", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)  # ~20 s when well; a hang fails fast


def _sidecars(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))]


@pytest.mark.slow
def test_t2v_sequence_over_two_ranks_writes_each_video_once_with_the_single_process_frames(tmp_path):
    split, single = tmp_path / "split", tmp_path / "single"
    run = _torchrun("t2v", "a red ball", *FAST, "--seed", "5", "-n", "2", "--parallel", "sequence", "--out", str(split), "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["seed"] for r in records] == [5, 6]  # rank 0 reports, once per video
    sidecars = _sidecars(split)
    assert len(sidecars) == 2 and len(list(split.rglob("*.mp4"))) == 2
    assert all(s["parallel"] == {"mode": "sequence", "world_size": 2, "cfg": 1, "sequence": 2} for s in sidecars)
    assert all(s["request"]["model"]["parallel"] == "sequence" for s in sidecars)
    assert run.stderr.count("loading model...") == 1 and run.stderr.count("denoising...") == 2  # rank 0's progress only

    alone = runner.invoke(app, ["t2v", "a red ball", *FAST, "--seed", "5", "-n", "2", "--out", str(single), "--json"])
    assert alone.exit_code == 0, alone.output
    for record, other in zip(records, (json.loads(line) for line in alone.stdout.splitlines())):
        assert np.array_equal(read_video(record["path"])[0], read_video(other["path"])[0])  # bit-identical latents


@pytest.mark.slow
def test_batch_cfg_over_two_ranks_makes_every_line_once_and_summarises_once(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first\nsecond\n", encoding="utf-8")
    out = tmp_path / "out"
    run = _torchrun("batch", str(prompts), *FAST, "--parallel", "cfg", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    sidecars = _sidecars(out)
    assert sorted(s["batch_line"] for s in sidecars) == [1, 2]
    assert all(s["parallel"]["mode"] == "cfg" for s in sidecars)
    assert run.stderr.count("batch summary") == 1 and "2 done" in run.stderr
    assert len(run.stdout.split()) == 2

    again = _torchrun("batch", str(prompts), *FAST, "--parallel", "cfg", "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_sidecars(out)) == 2 and "2 skipped" in again.stderr
