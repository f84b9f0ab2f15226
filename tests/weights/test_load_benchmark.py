"""The diffusers-vs-SAT load benchmark runs (its --smoke size; the real 2B-sized numbers are in its docstring's
report, measured by running it without --smoke)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "load_diffusers.py"


@pytest.mark.slow
def test_load_benchmark_smoke(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--keep", str(tmp_path / "c")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["sat"]["checksum"] == record["diffusers"]["checksum"]  # the same weights from both layouts
    assert (tmp_path / "c" / "diffusers" / "diffusion_pytorch_model.safetensors.index.json").is_file()  # shards
