"""Budget: `cogvid --help` and `cogvid models list` start in under 0.5 s and never import torch.

Usage: python benchmarks/startup.py [--runs N]
Prints the median and worst wall time of each command over N runs (in fresh processes).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

BUDGET_S = 0.5
COMMANDS = (["--help"], ["models", "list"], ["models", "list", "--json"])


def command_prefix() -> list[str]:
    exe = shutil.which("cogvid")
    return [exe] if exe else [sys.executable, "-m", "cogvid"]


def time_command(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*command_prefix(), *args], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def imports_torch(args: list[str]) -> bool:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cogvid", *args], check=True, capture_output=True, text=True
    )
    return any(line.rstrip().endswith("| torch") for line in result.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    print(f"{'command':<32} {'median s':>9} {'max s':>7} {'torch?':>7} {'budget':>8}")
    ok = True
    for args in COMMANDS:
        times = time_command(args, runs)
        median = statistics.median(times)
        torch_loaded = imports_torch(args)
        within = median < BUDGET_S and not torch_loaded
        ok &= within
        print(f"{'cogvid ' + ' '.join(args):<32} {median:>9.3f} {max(times):>7.3f} {str(torch_loaded):>7} "
              f"{'ok' if within else 'OVER':>8}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
