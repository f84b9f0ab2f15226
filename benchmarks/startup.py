"""Budget: `cogvid --help` and `cogvid models list` start in under 0.5 s and never import torch.

Usage: python benchmarks/startup.py [--runs N] [--smoke]
Prints the median and worst wall time of each command over N runs (in fresh processes) and exits
non-zero when a command is over the budget. ``--smoke``: one run each, and only importing torch
fails (checks that it runs; a busy machine is slow).
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
    parser.add_argument("--smoke", action="store_true", help="one run each; report the times without failing on them")
    options = parser.parse_args()
    runs = 1 if options.smoke else options.runs
    print(f"{'command':<32} {'median s':>9} {'max s':>7} {'torch?':>7} {'budget':>8}")
    ok = True
    for args in COMMANDS:
        times = time_command(args, runs)
        median = statistics.median(times)
        torch_loaded = imports_torch(args)
        within = median < BUDGET_S and not torch_loaded
        ok &= within or (options.smoke and not torch_loaded)
        print(f"{'cogvid ' + ' '.join(args):<32} {median:>9.3f} {max(times):>7.3f} {str(torch_loaded):>7} "
              f"{'ok' if within else 'OVER':>8}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
