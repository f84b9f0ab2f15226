"""`cogvid lora inspect|apply` and `--lora` on t2v: outputs, SAT loadability, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.margins import assert_within
from fixtures.sat_roundtrip import fixed_inputs
from fixtures.tiny_dit import tiny_network_config, write_tiny_dit
from fixtures.tiny_lora import write_tiny_lora
from typer.testing import CliRunner

from cogvid.checkpoint import read_state_dict, split_engine_state
from cogvid.dit import load_dit
from cogvid.cli.app import app
from cogvid.registry import get_model
from cogvid.video import read_video

runner = CliRunner()
HERE = Path(__file__).resolve().parent
RANK = 4
TOLERANCE = 1e-5  # DiT output, merged vs runtime LoRA (max abs error, see test_lora_merge.py); measured max 8.3e-7


def read_dit(folder: Path) -> dict[str, torch.Tensor]:
    return split_engine_state(read_state_dict(folder))["dit"]


def fixed_output(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**fixed_inputs(model.in_channels))


@pytest.fixture
def base_and_lora(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base"
    write_tiny_dit(base, "5b", seed=1)
    write_tiny_lora(tmp_path / "lora", read_dit(base), RANK, seed=2)
    return base, tmp_path / "lora"


def one_error(result) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_inspect_reports_rank_layers_and_fit(base_and_lora):
    _, lora = base_and_lora
    result = runner.invoke(app, ["lora", "inspect", str(lora), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["rank"] == RANK and info["lora_alpha"] == 1.0 and info["scaling"] == pytest.approx(1 / RANK)
    assert info["model_layers"] == 2 and info["lora_layers"] == [0, 1]
    assert info["projections"] == ["query_key_value", "dense"]
    # per layer: qkv 3 x (A (r, H) + B (H, r)), dense 1 x the same; H = 128
    assert info["parameters"] == 2 * 4 * (RANK * 128 * 2)
    assert info["dtype"] == "float32" and info["hidden_size"] == 128
    assert info["fits"] == ["test-tiny"] and info["trained_on"].startswith("a CogVideoX 1.0-style text-to-video DiT of no released size (hidden size 128, 2 layers")

    text = runner.invoke(app, ["lora", "inspect", str(lora)])
    assert text.exit_code == 0 and "rank 4" in text.stdout and "test-tiny" in text.stdout


def test_inspect_reads_alpha_and_partial_layers_from_training_config(tmp_path):
    base = tmp_path / "base"
    write_tiny_dit(base, "5b", seed=1, num_layers=5)  # no known model has 5 layers of width 128
    write_tiny_lora(tmp_path / "lora", read_dit(base), 8, seed=2, alpha=4.0, layers=[1])
    info = json.loads(runner.invoke(app, ["lora", "inspect", str(tmp_path / "lora"), "--json"]).stdout)
    assert info["rank"] == 8 and info["scaling"] == pytest.approx(0.5)
    assert info["lora_alpha_from"].endswith("training_config.yaml")
    assert info["model_layers"] == 5 and info["lora_layers"] == [1] and info["fits"] == []


def test_apply_writes_a_plain_checkpoint_equal_to_runtime_lora(base_and_lora, tmp_path):
    base, lora = base_and_lora
    out = tmp_path / "merged"
    result = runner.invoke(app, ["lora", "apply", str(base), str(lora), "--out", str(out), "--scale", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scaling"] == pytest.approx(0.5 / RANK)
    module = read_state_dict(out)
    assert all(k.startswith("model.diffusion_model.") for k in module)
    assert not any(".matrix_" in k or ".original." in k for k in module)
    assert set(module) == {"model.diffusion_model." + k for k in read_dit(base)}

    runtime = tiny_network_config("5b", lora_r=RANK)
    runtime["params"]["modules"]["lora_config"]["params"]["lora_alpha"] = 0.5
    expected = fixed_output(load_dit(runtime, lora, dtype=torch.float32))
    merged = fixed_output(load_dit(tiny_network_config("5b"), out, dtype=torch.float32))
    assert_within(merged, expected, TOLERANCE, "merged vs runtime")

    again = runner.invoke(app, ["lora", "apply", str(base), str(lora), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in one_error(again)


def test_apply_to_a_registry_name_resolves_through_weights(base_and_lora, tmp_path):
    _, lora = base_and_lora
    entry = get_model("test-tiny")
    demo = entry.weight_paths()["transformer"]
    tiny_lora = tmp_path / "tiny-lora"
    write_tiny_lora(tiny_lora, read_dit(demo), RANK, seed=3)
    out = tmp_path / "merged"
    result = runner.invoke(app, ["lora", "apply", "test-tiny", str(tiny_lora), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["base"] == str(demo)
    fits = runner.invoke(app, ["lora", "apply", "test-tiny", str(lora), "--out", str(tmp_path / "x")])
    assert fits.exit_code == 0  # same hidden size and layer count: the 5b-style tiny LoRA fits the demo DiT
    missing = runner.invoke(app, ["lora", "apply", "cogvideox-5b", str(lora), "--out", str(tmp_path / "y")])
    assert missing.exit_code == 3 and "transformer of cogvideox-5b" in one_error(missing)


def test_mismatched_lora_is_a_checkpoint_error(tmp_path):
    small = tmp_path / "small"
    write_tiny_dit(small, "5b", seed=1, num_layers=1)
    write_tiny_lora(tmp_path / "lora", read_dit(small), RANK, seed=2)
    base = tmp_path / "base"
    write_tiny_dit(base, "5b", seed=1)
    result = runner.invoke(app, ["lora", "apply", str(base), str(tmp_path / "lora"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 3
    assert "the LoRA has 1 layers, the model 2" in one_error(result) and not (tmp_path / "out").exists()

    t2v = runner.invoke(app, ["t2v", "a cat", "--steps", "1", "--lora", str(tmp_path / "lora"), "--out", str(tmp_path / "v")])
    assert t2v.exit_code == 3 and "does not fit test-tiny" in one_error(t2v)


def test_plain_checkpoint_is_not_a_lora(base_and_lora, tmp_path):
    base, _ = base_and_lora
    result = runner.invoke(app, ["lora", "inspect", str(base)])
    assert result.exit_code == 3 and "no LoRA matrices" in one_error(result)
    swapped = runner.invoke(app, ["lora", "apply", str(base_and_lora[1]), str(base_and_lora[1]), "--out", str(tmp_path / "o")])
    assert swapped.exit_code == 3 and "not a plain CogVideoX DiT" in one_error(swapped)


def test_missing_files_and_bad_values(base_and_lora, tmp_path):
    base, lora = base_and_lora
    cases = [
        (["lora", "inspect", str(tmp_path / "nope")], 3, "does not exist"),
        (["lora", "apply", str(tmp_path / "nope"), str(lora), "--out", str(tmp_path / "o")], 3, "neither an existing"),
        (["lora", "apply", str(base), str(tmp_path / "nope"), "--out", str(tmp_path / "o")], 3, "does not exist"),
        (["t2v", "a cat", "--lora", str(tmp_path / "nope") + ":0.5"], 3, "does not exist"),
        (["t2v", "a cat", "--lora", f"{lora}:strong"], 2, "is not a number"),
    ]
    for args, code, text in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert text in one_error(result), result.output
    (lora / "1000" / "mp_rank_00_model_states.pt").unlink()
    broken = runner.invoke(app, ["lora", "inspect", str(lora)])
    assert broken.exit_code == 3 and "does not exist" in one_error(broken)


@pytest.mark.slow
def test_t2v_with_lora_writes_the_lora_into_the_sidecar(tmp_path):
    demo = get_model("test-tiny").weight_paths()["transformer"]
    lora = tmp_path / "tiny-lora"
    write_tiny_lora(lora, read_dit(demo), RANK, seed=3)
    args = ["t2v", "a red ball", "--steps", "2", "--seed", "7", "--frames", "9", "--out", str(tmp_path / "v"), "--json"]
    result = runner.invoke(app, [*args, "--lora", f"{lora}:0.5"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(record["path"]).is_file()
    sidecar = json.loads(Path(record["sidecar"]).read_text())
    assert sidecar["loras"] == [{"path": str(lora), "scale": 0.5}]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    plain_record = json.loads(plain.stdout.strip().splitlines()[-1])
    assert json.loads(Path(plain_record["sidecar"]).read_text())["loras"] == []
    with_lora, without = read_video(record["path"])[0], read_video(plain_record["path"])[0]
    assert with_lora.shape == without.shape and not np.array_equal(with_lora, without)


@pytest.mark.slow
def test_sat_load_checkpoint_reads_the_merged_checkpoint(base_and_lora, tmp_path):
    base, lora = base_and_lora
    out = tmp_path / "merged"
    assert runner.invoke(app, ["lora", "apply", str(base), str(lora), "--out", str(out)]).exit_code == 0
    result_file = tmp_path / "sat.pt"
    subprocess.run(
        [sys.executable, str(HERE.parent / "fixtures" / "sat_roundtrip.py"), "5b", "0", str(out), str(tmp_path / "saved"), str(result_file)],
        check=True, capture_output=True, timeout=300,
    )
    expected = fixed_output(load_dit(tiny_network_config("5b", lora_r=RANK), lora, dtype=torch.float32))
    loaded = torch.load(result_file)["loaded"]
    assert_within(loaded, expected, TOLERANCE, "SAT-loaded merged vs runtime")
