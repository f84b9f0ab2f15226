"""The sequence-parallel benchmark runs end to end on its smoke settings and reports what it measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "parallel_denoise.py"


@pytest.mark.slow
def test_benchmark_smoke():
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in names}
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {row["processes"]: row for row in report["rows"]}
    assert sorted(rows) == [1, 2]
    assert rows[2]["max_rel_diff"] == 0.0  # sequence parallelism moves rows, it does not change them
    assert rows[1]["peak_mib"] > 0 and rows[2]["peak_mib"] > 0 and rows[2]["seconds_per_step"] > 0
    assert rows[2]["peak_mib"] < rows[1]["peak_mib"]  # even 48 video tokens next to 226 text tokens: less per rank
