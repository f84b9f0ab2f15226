"""`cogvid` shell: --help, --version, models list/show, errors and exit codes, fast start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cogvid.cli.app import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_commands_and_examples():
    result = run("--help")
    assert result.exit_code == 0
    assert "models" in result.output and "Examples" in result.output


def test_version():
    from cogvid import __version__

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"cogvid {__version__}"


def test_models_list_shows_every_model_missing_with_paths(isolated_user_dirs):
    result = run("models", "list")
    assert result.exit_code == 0, result.output
    for name in ("cogvideox-2b", "cogvideox-5b", "cogvideox-5b-i2v", "cogvideox1.5-5b", "cogvideox1.5-5b-i2v"):
        assert name in result.output
    assert "missing" in result.output
    assert str(isolated_user_dirs / "weights" / "cogvideox-2b") in result.output


def test_models_list_json_and_weights_found(tmp_path):
    root = tmp_path / "w"
    model = root / "cogvideox-2b"
    (model / "transformer" / "1000").mkdir(parents=True)
    (model / "transformer" / "latest").write_text("1000\n")
    (model / "transformer" / "1000" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    (model / "vae").mkdir()
    (model / "vae" / "3d-vae.pt").write_bytes(b"x")
    (model / "t5-v1_1-xxl").mkdir()
    (model / "t5-v1_1-xxl" / "config.json").write_text("{}")
    result = run("models", "list", "--json", "--weights", str(root))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    by_name = {m["name"]: m for m in data["models"]}
    assert by_name["cogvideox-2b"]["weights_found"] is True
    assert by_name["cogvideox-5b"]["weights_found"] is False
    assert by_name["cogvideox-2b"]["frames"] == 49 and by_name["cogvideox1.5-5b"]["fps"] == 16


def test_models_list_reports_a_broken_latest(tmp_path):
    transformer = tmp_path / "cogvideox-5b" / "transformer"
    transformer.mkdir(parents=True)
    (transformer / "latest").write_text("1000\n")
    data = json.loads(run("models", "list", "--json", "--weights", str(tmp_path)).stdout)
    info = {m["name"]: m for m in data["models"]}["cogvideox-5b"]["weights"]["transformer"]
    assert info["found"] is False and "mp_rank_00_model_states.pt does not exist" in info["problem"]


def test_models_show_prints_config_paths_and_download():
    result = run("models", "show", "cogvideox-5b")
    assert result.exit_code == 0, result.output
    assert "3072" in result.output and "Rotary3DPositionEmbeddingMixin" in result.output
    assert "t5-v1_1-xxl" in result.output and "Download" in result.output


def test_models_show_json_with_set_and_config(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("args: {sampling_fps: 12}\n")
    result = run("models", "show", "cogvideox-2b", "--json", "--config", str(extra), "--set", "args.sampling_num_frames=9")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["config"]["args"]["sampling_fps"] == 12
    assert data["config"]["args"]["sampling_num_frames"] == 9


@pytest.mark.parametrize(
    "args, message",
    [
        (("models", "show", "cogvidx-5b"), "unknown model 'cogvidx-5b'"),
        (("models", "show", "cogvideox-5b", "--set", "args.nope=1"), "no key 'args.nope'"),
        (("models", "show", "cogvideox-5b", "--set", "args.sampling_fps=fast"), "expected a number"),
    ],
)
def test_bad_input_exit_code_2_one_message_no_traceback(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.count("error:") == 1


def test_malformed_yaml_and_unknown_target_via_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("args:\n  sampling_fps: [1, 2\n")
    result = run("models", "show", "cogvideox-5b", "--config", str(bad))
    assert result.exit_code == 2 and f"{bad}:" in result.output and "Traceback" not in result.output
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  sampler_config:\n    target: sgm.nope.Sampler\n")
    result = run("models", "show", "cogvideox-5b", "--config", str(typo))
    assert result.exit_code == 2 and "unknown target 'sgm.nope.Sampler'" in result.output


def _run_cli(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "cogvid", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("args", [("--help",), ("models", "list"), ("models", "show", "cogvideox-2b")])
def test_fast_commands_never_import_torch(args):
    result = _run_cli(*args)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "cogvid.cli.app" in imported
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}


def test_completion_never_imports_torch_and_completes_models():
    result = _run_cli(
        extra_env={"_COGVID_COMPLETE": "complete_bash", "COMP_WORDS": "cogvid models show cogvideox-5", "COMP_CWORD": "3"}
    )
    assert result.returncode == 0
    assert result.stdout.split() == ["cogvideox-5b", "cogvideox-5b-i2v"]
    assert " torch\n" not in result.stderr and "| torch" not in result.stderr


def test_debug_shows_traceback_for_errors():
    result = subprocess.run(
        [sys.executable, "-m", "cogvid", "--debug", "models", "show", "nope"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: unknown model 'nope'" in result.stderr
    quiet = subprocess.run([sys.executable, "-m", "cogvid", "models", "show", "nope"], capture_output=True, text=True)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr and quiet.stdout == ""
