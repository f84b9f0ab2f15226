"""The speed benchmarks run with their smoke arguments (tiny sizes, CPU), so none rots; gpu.py runs
here on the CPU with a tiny DiT of each layout (the fp8 mode reports that it needs a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _smoke(script: str, *extra: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *extra], capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_gpu_benchmark_runs_on_the_cpu_with_a_tiny_dit():
    out = _smoke("gpu.py")
    for model in ("cogvideox-2b", "cogvideox-5b"):
        rows = [line for line in out.splitlines() if line.startswith(model)]
        assert [row.split(")")[1].split()[0] for row in rows] == ["eager", "teacache", "compile", "fp8dq+compile"], out
        assert "needs a CUDA GPU" in rows[3] and "steps skipped" in rows[1]


@pytest.mark.slow
def test_speed_cpu_benchmark_smoke():
    out = _smoke("speed_cpu.py")
    assert "ratio compiled/eager" in out and "int8wo weights" in out


@pytest.mark.slow
def test_dit_vae_vs_diffusers_benchmark_smoke():
    out = _smoke("dit_vae_vs_diffusers.py")
    assert all(part in out for part in ("DiT step    eager", "DiT step    compiled", "VAE decode  eager"))


@pytest.mark.slow
def test_step_cache_benchmark_smoke():
    out = _smoke("step_cache.py")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["none", "teacache", "fbcache:0.1"]
