"""Step caches on the demo model: DiT forwards skipped vs what the demo judge reads, per threshold.

Usage: python benchmarks/step_cache.py [--captions 50] [--settings teacache:0.1,teacache:0.2,...] [--json]
       python benchmarks/step_cache.py --smoke      (2 captions, 3 steps: the smoke test's run)

For each setting (and once without a cache) it generates one clip per held-out caption of the demo
world (same seeds for every setting) with ``cogvideox-tiny`` and scores colour, direction and shape
with benchmarks/judge.py. Prints the skipped fraction of DiT forwards, the fraction of blocks run,
the accuracies and their change from the uncached run, and the median seconds per clip.
The goal: at the default threshold, >= 35% of forwards skipped with every accuracy within 0.04.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import judge  # noqa: E402

DEFAULT_SETTINGS = "teacache:0.1,teacache:0.2,teacache:0.3,fbcache:0.08,fbcache:0.12,fbcache:0.2"


def run_setting(pipe, pairs, setting, steps, seed=0):  # noqa: ANN001, ANN201
    """Accuracies, forward counts and seconds per clip for one cache setting (None: uncached)."""
    results, seconds, skipped, forwards, blocks_run, blocks_total = [], [], 0, 0, 0, 0
    for index, (caption, attrs) in enumerate(pairs):
        started = time.perf_counter()
        video = pipe.generate(caption, seed=seed + index, steps=steps, cache=setting)
        seconds.append(time.perf_counter() - started)
        results.append(judge.judge_clip(video.frames, attrs))
        stats = video.metadata.get("step_cache")
        if stats is not None:
            skipped += stats["skipped"]
            forwards += stats["dit_forwards"]
            blocks_run += stats["blocks_run"]
            blocks_total += stats["blocks_total"]
    row = {"setting": setting or "none", **judge.accuracy(results), "s_per_clip": statistics.median(seconds)}
    row["skipped"] = skipped / forwards if forwards else 0.0
    row["blocks_run"] = blocks_run / blocks_total if blocks_total else 1.0
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=50)
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="comma-separated cache settings")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 50)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="caption i uses seed SEED + i (same for every setting)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per setting")
    parser.add_argument("--smoke", action="store_true", help="2 captions, 3 steps, two settings (the smoke test)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.captions, args.steps, args.settings = 2, 3, "teacache,fbcache:0.1"
    import torch

    import cogvid

    torch.set_num_threads(args.threads)
    pipe = cogvid.load("cogvideox-tiny", device="cpu")
    pairs = judge.world.held_out_captions(args.captions)
    rows = [run_setting(pipe, pairs, None, args.steps, args.seed)]
    for setting in args.settings.split(","):
        rows.append(run_setting(pipe, pairs, setting.strip(), args.steps, args.seed))
    base = rows[0]
    print(f"cogvideox-tiny, {len(pairs)} held-out captions, seeds {args.seed}+i, steps {args.steps or 'default'}, {args.threads} thread(s)")
    print(f"{'cache':<14} {'skipped':>8} {'blocks run':>11} {'color':>6} {'dir.':>6} {'shape':>6} {'all':>6}"
          f" {'d color':>8} {'d dir.':>7} {'d shape':>8} {'s/clip':>7}")
    for row in rows:
        deltas = {name: row[name] - base[name] for name in judge.ATTRIBUTES}
        row.update({f"delta_{name}": value for name, value in deltas.items()})
        print(f"{row['setting']:<14} {row['skipped']:>8.2f} {row['blocks_run']:>11.2f} {row['color']:>6.2f} {row['direction']:>6.2f}"
              f" {row['shape']:>6.2f} {row['all']:>6.2f} {deltas['color']:>+8.2f} {deltas['direction']:>+7.2f}"
              f" {deltas['shape']:>+8.2f} {row['s_per_clip']:>7.2f}")
        if args.json:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
