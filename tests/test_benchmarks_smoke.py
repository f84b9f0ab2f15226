"""Every script in benchmarks/ runs with its smallest arguments and prints its result table.

Benchmarks are not run for their numbers here, only so that none can rot: each script found in the
folder runs in a subprocess with the arguments registered in ``SMOKE`` (a new script without an entry
fails until it gets one) and must exit 0 and print the lines that make up its table.
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
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py"))


@dataclass(frozen=True)
class Smoke:
    """The smallest arguments of one benchmark and a regular expression its table matches (multiline)."""

    args: tuple[str, ...]
    table: str


SMOKE: dict[str, Smoke] = {
    "judge.py": Smoke(
        ("--captions", "2", "--steps", "2", "--threads", "1"),
        r"^model\s+sampler\s+guid\.\s+n\s+color\s+dir\.\s+shape\s+all\ncogvideox-tiny\s+default\s+default\s+2(\s+[01]\.\d\d){4}$",
    ),
    "load_checkpoint.py": Smoke(
        ("--smoke",),
        r"^loader\s+time \(s\)\s+peak RSS \(GiB\)\s+RSS / file\ncogvid load_dit(\s+[\d.]+){3}\nSAT load_checkpoint path(\s+[\d.]+){3}$",
    ),
    "repl_latency.py": Smoke(
        ("--runs", "1", "--steps", "2"),
        r"^repl: second prompt, wall\s+[\d.]+\n.*\ncold: cogvid t2v, whole process\s+[\d.]+\nratio cold / repl\s+[\d.]+x$",
    ),
    "startup.py": Smoke(
        ("--smoke",),
        r"^cogvid --help\s+[\d.]+\s+[\d.]+\s+False\s+(ok|OVER)\ncogvid models list\s.*\ncogvid models list --json\s.*$",
    ),
    "t2v_vs_diffusers.py": Smoke(
        ("--smoke",),
        r"^cogvid\s+[\d.]+\s+[\d.]+\ndiffusers\s+[\d.]+\s+[\d.]+\nratio cogvid/diffusers: [\d.]+",
    ),
    "vae_decode.py": Smoke(
        ("--smoke",),
        r"^\s+glibc default\s+5\s+17\s+False(\s+[\d.]+){3}\n(.*\n){3}.*peak RSS 13 vs 5 latents",
    ),
}


def test_the_benchmarks_folder_has_scripts_and_every_entry_is_one():
    assert SCRIPTS, BENCHMARKS
    assert sorted(set(SMOKE) - set(SCRIPTS)) == []


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_with_its_smoke_arguments(script, tmp_path):
    if script not in SMOKE:
        pytest.fail(f"benchmarks/{script} has no smoke arguments: register its smallest run in SMOKE ({__file__})")
    smoke = SMOKE[script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # tiny workloads; a shared machine
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *smoke.args],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert re.search(smoke.table, result.stdout, re.MULTILINE), f"no result table in the output:\n{result.stdout[-3000:]}"
