"""Every script in benchmarks/ runs with its smallest arguments and prints its result table.

Benchmarks are not run for their numbers here, only so that none can rot: each script found in the
folder runs in a subprocess with the arguments registered in ``SMOKE`` (a new script without an entry
fails until it gets one) and must exit 0 and print the lines that make up its table. Modules whose
name starts with ``_`` are shared helpers of the scripts, not benchmarks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_"))


@dataclass(frozen=True)
class Smoke:
    """The smallest arguments of one benchmark run and a regular expression its table matches (multiline)."""

    script: str
    args: tuple[str, ...]
    table: str


SMOKE: list[Smoke] = [
    Smoke(
        "judge.py", ("--captions", "2", "--steps", "2", "--threads", "1"),
        r"^model\s+sampler\s+guid\.\s+n\s+color\s+dir\.\s+shape\s+all\ncogvideox-tiny\s+default\s+default\s+2(\s+[01]\.\d\d){4}$",
    ),
    Smoke(
        "load_checkpoint.py", ("--smoke",),
        r"^loader\s+time \(s\)\s+peak RSS \(GiB\)\s+RSS / file\ncogvid load_dit(\s+[\d.]+){3}\nSAT load_checkpoint path(\s+[\d.]+){3}$",
    ),
    Smoke(
        "repl_latency.py", ("--runs", "1", "--steps", "2"),
        r"^repl: second prompt, wall\s+[\d.]+\n.*\ncold: cogvid t2v, whole process\s+[\d.]+\nratio cold / repl\s+[\d.]+x$",
    ),
    Smoke(
        "startup.py", ("--smoke",),
        r"^cogvid --help\s+[\d.]+\s+[\d.]+\s+False\s+(ok|OVER)\ncogvid models list\s.*\ncogvid models list --json\s.*$",
    ),
    Smoke(
        "t2v_vs_diffusers.py", ("--smoke",),
        r"^cogvid\s+[\d.]+\s+[\d.]+\ndiffusers\s+[\d.]+\s+[\d.]+\nratio cogvid/diffusers: [\d.]+",
    ),
    Smoke(
        "vae_decode.py", ("--smoke",),
        r"^\s+glibc default\s+5\s+17\s+False(\s+[\d.]+){3}\n(.*\n){3}.*peak RSS 13 vs 5 latents",
    ),
    Smoke(
        "gpu.py", ("--memory", "--offload", "none", "--steps", "1"),
        r"^offload\s+tiling\s+stage\s+measured\s+plan\s+plan/measured.*\nnone\s+False\s+text\s+[\d.]+\s+[\d.]+\s+[\d.]+\nnone\s+False\s+denoising(\s+[\d.]+){3}\nnone\s+False\s+decoding(\s+[\d.]+){3}",
    ),
]

# Benchmarks whose smoke run (with more checks on what they report) lives in another test file.
ELSEWHERE = {
    "dit_vae_vs_diffusers.py": "tests/speed/test_speed_benchmarks.py",
    "gpu_memory.py": "tests/memory/test_gpu_memory_benchmark.py",
    "load_diffusers.py": "tests/weights/test_load_benchmark.py",
    "parallel_denoise.py": "tests/parallel/test_parallel_benchmark.py",
    "speed_cpu.py": "tests/speed/test_speed_benchmarks.py",
    "step_cache.py": "tests/speed/test_speed_benchmarks.py",
}
# gpu.py --smoke runs in tests/speed/test_speed_benchmarks.py too; its --memory run is registered below.


def test_every_benchmark_has_a_smoke_run_and_every_run_a_benchmark():
    assert SCRIPTS, BENCHMARKS
    for script, test in ELSEWHERE.items():
        assert script in (BENCHMARKS.parent / test).read_text(encoding="utf-8"), (script, test)
    registered = {smoke.script for smoke in SMOKE} | set(ELSEWHERE)
    missing = sorted(set(SCRIPTS) - registered)
    assert not missing, f"benchmarks without smoke arguments: {missing}; register their smallest run in SMOKE ({__file__})"
    assert sorted(registered - set(SCRIPTS)) == []


@pytest.mark.slow
@pytest.mark.parametrize("smoke", SMOKE, ids=lambda smoke: " ".join((smoke.script, *smoke.args)))
def test_benchmark_runs_with_its_smoke_arguments(smoke, tmp_path):
    script = smoke.script
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # tiny workloads; a shared machine
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *smoke.args],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert re.search(smoke.table, result.stdout, re.MULTILINE), f"no result table in the output:\n{result.stdout[-3000:]}"
