"""`cogvid batch --lora`: the LoRA is applied to every line and is part of the resume key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.tiny_lora import write_tiny_lora
from typer.testing import CliRunner

from cogvid.checkpoint import read_state_dict, split_engine_state
from cogvid.cli.app import app
from cogvid.registry import get_model

runner = CliRunner()


@pytest.mark.slow
def test_batch_with_lora_records_it_and_resumes_per_lora(tmp_path):
    demo = get_model("test-tiny").weight_paths()["transformer"]
    lora = tmp_path / "tiny-lora"
    write_tiny_lora(lora, split_engine_state(read_state_dict(demo))["dit"], 4, seed=3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n", encoding="utf-8")
    out = tmp_path / "out"
    base = ["batch", str(prompts), "--steps", "2", "--frames", "9", "--out", str(out), "--json"]
    first = runner.invoke(app, [*base, "--lora", f"{lora}:0.5"])
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout.strip().splitlines()[-1])
    assert json.loads(Path(record["sidecar"]).read_text())["loras"] == [{"path": str(lora), "scale": 0.5}]
    again = runner.invoke(app, [*base, "--lora", f"{lora}:0.5", "--resume"])
    assert again.exit_code == 0 and again.stdout.strip() == ""  # already complete
    other = runner.invoke(app, [*base, "--resume"])  # without the LoRA: a different video
    assert other.exit_code == 0 and len(other.stdout.strip().splitlines()) == 1
    bad = runner.invoke(app, [*base, "--lora", str(tmp_path / "nope")])
    assert bad.exit_code == 3 and "error:" in bad.output


@pytest.mark.slow
def test_jsonl_lines_choose_their_own_lora(tmp_path):
    demo = get_model("test-tiny").weight_paths()["transformer"]
    lora = tmp_path / "tiny-lora"
    write_tiny_lora(lora, split_engine_state(read_state_dict(demo))["dit"], 4, seed=3)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"prompt": "plain", "seed": 1}\n'
        '{"prompt": "styled", "seed": 1, "lora": "tiny-lora:0.5"}\n'
        '{"prompt": "two", "seed": 1, "lora": ["tiny-lora:0.5", "tiny-lora:0.25"]}\n'
        '{"prompt": "broken", "lora": "no-such-lora"}\n'
        '{"prompt": "bad type", "lora": 3}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(jobs), "--steps", "2", "--frames", "9", "--out", str(out), "--json"])
    assert result.exit_code == 1, result.output  # two bad lines, reported; the others ran
    assert "line 4:" in result.output and "line 5:" in result.output
    records = {r["prompt"]: r for r in map(json.loads, result.stdout.strip().splitlines())}
    assert set(records) == {"plain", "styled", "two"}
    assert records["plain"]["loras"] == []
    assert records["styled"]["loras"] == [{"path": str(lora), "scale": 0.5}]
    assert [entry["scale"] for entry in records["two"]["loras"]] == [0.5, 0.25]
