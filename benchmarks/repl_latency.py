"""Budget: in `cogvid repl` a second prompt costs only the generation, never a reload.

Usage: python benchmarks/repl_latency.py [--runs N] [--model NAME] [--steps S] [--frames F]

For each run it times, in fresh processes and with the same prompt, seed and settings:

* repl: the wall time from sending the second prompt line to `cogvid repl` (stdin a pipe, the
  scripted mode) until its video path appears on stdout; the first prompt warms the session up;
* cold: the wall time of one `cogvid t2v` run (start, model load, generation, exit).

Prints the medians, the REPL's own "generated in" figure and the ratio cold / repl.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red ball bouncing on a wooden floor"


def command_prefix() -> list[str]:
    exe = shutil.which("cogvid")
    return [exe] if exe else [sys.executable, "-m", "cogvid"]


def repl_second_prompt(settings: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds of the second prompt seen from outside, the REPL's own "generated in" seconds)."""
    out.mkdir(parents=True)
    log = out / "repl-stderr.txt"
    with open(log, "w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [*command_prefix(), "repl", *settings, "--out", str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(PROMPT + "\n")
        proc.stdin.flush()
        _wait_for_video(proc)
        started = time.perf_counter()
        proc.stdin.write(PROMPT + "\n")
        proc.stdin.flush()
        _wait_for_video(proc)
        wall = time.perf_counter() - started
        proc.stdin.close()
        if proc.wait(timeout=60) != 0:
            sys.exit(f"cogvid repl failed:\n{log.read_text()}")
    reported = [float(s) for s in re.findall(r"generated in ([\d.]+) s", log.read_text())]
    loads = log.read_text().count("loading model...")
    if loads != 1:
        sys.exit(f"cogvid repl loaded the model {loads} times")
    return wall, reported[-1]


def _wait_for_video(proc: subprocess.Popen) -> str:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            sys.exit("cogvid repl ended before writing a video")
        if line.rstrip().endswith(".mp4"):
            return line.strip()


def cold_t2v(settings: list[str], out: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([*command_prefix(), "t2v", PROMPT, *settings, "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"cogvid t2v failed:\n{result.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="cogvideox-tiny")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--frames", type=int, default=None, help="default: the model's")
    args = parser.parse_args()
    settings = ["--model", args.model, "--seed", "1"]
    if args.steps is not None:
        settings += ["--steps", str(args.steps)]
    if args.frames is not None:
        settings += ["--frames", str(args.frames)]

    repl_walls, repl_reported, colds = [], [], []
    with tempfile.TemporaryDirectory(prefix="cogvid-repl-bench-") as tmp:
        for run in range(args.runs):
            wall, reported = repl_second_prompt(settings, Path(tmp) / f"repl{run}")
            repl_walls.append(wall)
            repl_reported.append(reported)
            colds.append(cold_t2v(settings, Path(tmp) / f"cold{run}"))
            print(f"run {run + 1}/{args.runs}: repl second prompt {wall:.2f} s (reported {reported:.2f} s), "
                  f"cold t2v {colds[-1]:.2f} s", file=sys.stderr)

    repl_s, cold_s = statistics.median(repl_walls), statistics.median(colds)
    print(f"{'measure (' + args.model + ', median of ' + str(args.runs) + ')':<44} {'seconds':>8}")
    print(f"{'repl: second prompt, wall':<44} {repl_s:>8.2f}")
    print(f"{'repl: second prompt, its own generated in':<44} {statistics.median(repl_reported):>8.2f}")
    print(f"{'cold: cogvid t2v, whole process':<44} {cold_s:>8.2f}")
    print(f"{'ratio cold / repl':<44} {cold_s / repl_s:>8.2f}x")


if __name__ == "__main__":
    main()
