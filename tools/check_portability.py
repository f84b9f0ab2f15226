"""Run the golden and parity tests under several CPU kernel settings, as another machine would.

Usage: python tools/check_portability.py [--files FILE ...] [--settings NAME ...] [--json OUT] [-- PYTEST_ARGS]

Results compared with stored goldens or with another implementation are not bit-exact from one CPU
to the next: PyTorch picks kernels by instruction set (``ATEN_CPU_CAPABILITY``), oneDNN and MKL by
their own ISA limits, and reductions split by thread count. Each setting below reruns the chosen test
files in a fresh ``pytest`` process with those variables set. The script prints one row per setting
(passed, failed, skipped, seconds) and, from the errors the tests record through
``tests/fixtures/margins.py`` ($COGVID_MARGIN_LOG), the worst value of every tolerance check over all
settings beside its bound. It exits non-zero if any setting has a failure.

Too slow for ``.ci/run`` (each setting runs every file); run it after touching a tolerance, a golden
or a kernel-sensitive code path, and write the worst measured numbers beside the tolerances.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The test files that compare against stored goldens, literal reference numbers or another
#: implementation (diffusers, transformers, SAT, a subprocess).
DEFAULT_FILES = (
    "tests/diffusion/test_diffusion_original.py",
    "tests/diffusion/test_diffusion_parity.py",
    "tests/diffusion/test_diffusion_math.py",
    "tests/vae/test_vae_goldens.py",
    "tests/vae/test_vae_parity.py",
    "tests/vae/test_vae_parallel.py",
    "tests/dit/test_dit_parity.py",
    "tests/dit/test_dit_checkpoint.py",
    "tests/engine/test_engine_parity.py",
    "tests/engine/test_engine_i2v_parity.py",
    "tests/engine/test_engine_v15_parity.py",
    "tests/engine/test_engine_v15.py",
    "tests/lora/test_lora_merge.py",
    "tests/lora/test_lora_cli.py",
    "tests/text/test_text_conditioner.py",
    "tests/text/test_image_prep.py",
)

_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_TWO_THREADS = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}

#: name -> environment variables. The thread count is fixed in every setting so rows compare alike.
SETTINGS: dict[str, dict[str, str]] = {
    "aten-default": {"ATEN_CPU_CAPABILITY": "default", **_TWO_THREADS},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2", **_TWO_THREADS},
    "aten-avx512": {"ATEN_CPU_CAPABILITY": "avx512", **_TWO_THREADS},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", **_TWO_THREADS},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", **_TWO_THREADS},
    "avx2-machine": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", **_TWO_THREADS},
    "threads-1": dict(_ONE_THREAD),
    "threads-2": dict(_TWO_THREADS),
}

#: Variables a setting may set: cleared first, so the caller's environment does not leak into a row.
_CONTROLLED = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
               "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR")


@dataclass
class Row:
    """The outcome of one setting."""

    setting: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    returncode: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.passed > 0


def read_junit(path: Path) -> tuple[int, int, int, list[str]]:
    """(passed, failed incl. errors, skipped, failing test ids) from pytest's JUnit XML."""
    if not path.exists():
        return 0, 0, 0, []
    root = ElementTree.parse(path).getroot()
    passed = failed = skipped = 0
    failures = []
    for case in root.iter("testcase"):
        outcome = {child.tag for child in case}
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if outcome & {"failure", "error"}:
            failed += 1
            failures.append(name)
        elif "skipped" in outcome:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, failures


def run_setting(name: str, files: list[str], pytest_args: list[str], scratch: Path) -> tuple[Row, list[dict]]:
    """Run ``files`` under setting ``name`` in a fresh pytest process; the row and the margin records."""
    env = {k: v for k, v in os.environ.items() if k not in _CONTROLLED}
    env.update(SETTINGS[name])
    junit, margins = scratch / f"{name}.xml", scratch / f"{name}.jsonl"
    env["COGVID_MARGIN_LOG"] = str(margins)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args, *files]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    row = Row(name, seconds=time.perf_counter() - started, returncode=result.returncode)
    row.passed, row.failed, row.skipped, row.failures = read_junit(junit)
    if result.returncode not in (0, 1) or (result.returncode == 1 and not row.failed):
        row.failures.append(f"pytest exited {result.returncode}: {result.stdout[-800:]}{result.stderr[-800:]}")
    records = []
    if margins.exists():
        for line in margins.read_text(encoding="utf-8").splitlines():
            records.append({**json.loads(line), "setting": name})
    return row, records


def test_function(test_id: str) -> str:
    """``tests/x.py::test_y[params]`` -> ``x.py::test_y`` (parametrized cases grouped)."""
    return test_id.split("[", 1)[0].removeprefix("tests/")


def worst_margins(records: list[dict]) -> list[dict]:
    """Per check (test function, what, kind): the worst value over all cases and settings, with its setting."""
    worst: dict[tuple[str, str, str], dict] = {}
    for record in records:
        key = (test_function(record["test"]), record["what"], record["kind"])
        current = worst.get(key)
        is_worse = current is None or (
            record["value"] > current["value"] if record["kind"] == "within" else record["value"] < current["value"]
        )
        if is_worse:
            worst[key] = record
    return [{**worst[key], "check": f"{key[0]} [{key[1]}]"} for key in sorted(worst)]


def headroom(record: dict) -> float:
    """How far the worst value stays from its bound (x): bound / value for ``within``, value / bound for ``beyond``."""
    value, bound = record["value"], record["bound"]
    if record["kind"] == "within":
        return float("inf") if value == 0 else bound / value
    return float("inf") if bound == 0 else value / bound


def print_rows(rows: list[Row]) -> None:
    print(f"{'setting':<14} {'result':<7} {'passed':>7} {'failed':>7} {'skipped':>8} {'seconds':>8}")
    for row in rows:
        print(f"{row.setting:<14} {'ok' if row.ok else 'FAILED':<7} {row.passed:>7} {row.failed:>7} {row.skipped:>8} {row.seconds:>8.1f}")
    for row in rows:
        for failure in row.failures:
            print(f"  {row.setting}: {failure}")


def print_margins(records: list[dict]) -> None:
    worst = worst_margins(records)
    if not worst:
        return
    print()
    width = max(len(record["check"]) for record in worst)
    print(f"{'check (worst over cases and settings)':<{width}} {'kind':<7} {'worst':>10} {'bound':>10} {'headroom':>9}  setting")
    for record in worst:
        print(f"{record['check']:<{width}} {record['kind']:<7} {record['value']:>10.3g} {record['bound']:>10.3g} "
              f"{headroom(record):>8.1f}x  {record['setting']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="test files (default: the golden and parity files)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), help="settings to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write every row and margin record to this file")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)

    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="cogvid-portability-") as scratch:
        for name in args.settings:
            row, found = run_setting(name, args.files, args.pytest_args, Path(scratch))
            rows.append(row)
            records += found
            print(f"{name}: {'ok' if row.ok else 'FAILED'} ({row.passed} passed, {row.failed} failed, {row.seconds:.0f} s)",
                  file=sys.stderr, flush=True)
    print(f"{len(args.files)} test files under {len(rows)} settings")
    print_rows(rows)
    print_margins(records)
    if args.json:
        args.json.write_text(json.dumps({"rows": [vars(r) for r in rows], "margins": records}, indent=1))
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
