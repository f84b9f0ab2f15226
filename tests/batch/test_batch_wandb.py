"""`cogvid batch --wandb PROJECT` logs each finished video with its settings (offline mode here)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cogvid.cli.app import app

runner = CliRunner()


@pytest.mark.slow
def test_batch_logs_every_video_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue cube\n", encoding="utf-8")
    result = runner.invoke(
        app, ["batch", str(prompts), "--steps", "2", "--frames", "9", "--out", str(tmp_path / "out"),
              "--json", "--wandb", "cogvid-test"],
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 2
    runs = list((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    videos = list(runs[0].rglob("media/videos/**/*.mp4"))
    assert len(videos) == 2
    (record_file,) = runs[0].glob("run-*.wandb")  # the run's config and logged rows, in W&B's record format
    data = record_file.read_bytes()
    assert b"test-tiny" in data and b"a blue cube" in data


def test_wandb_without_login_fails_before_loading(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n", encoding="utf-8")
    result = runner.invoke(app, ["batch", str(prompts), "--out", str(tmp_path / "out"), "--wandb", "p"])
    assert result.exit_code == 2 and "needs a Weights & Biases login" in result.output
    assert "loading model" not in result.output
