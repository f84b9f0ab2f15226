"""Peak GPU memory of each stage, measured, beside cogvid's memory plan (``cogvid plan``).

On CUDA, each offload mode runs in a fresh subprocess: load the model, make one video, and record per
stage (loading, text, image, denoising, decoding) ``torch.cuda.max_memory_allocated`` (peak statistics
reset when the stage starts), plus the process's peak host RSS. The table puts the plan's estimate
beside each measurement. On a CPU (the smoke test; tiny models) the device is the host: only
``--offload none`` means anything there, and a live-tensor tracker (tests/fixtures/alloc_tracker.py)
stands in for the CUDA allocator's statistics.

    python benchmarks/gpu_memory.py [-m MODEL] [--weights DIR] [--size HxW] [--frames N] [--steps N]
                                    [--offload none,text,model,blocks] [--tiling] [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


def _request(args: argparse.Namespace, offload: str) -> Any:
    from cogvid.request import GenerationRequest, ModelChoice
    from cogvid.spec import parse_size

    height, width = parse_size(args.size) if args.size else (None, None)
    choice = ModelChoice(args.model, args.weights, device=args.device, offload=offload, memory="off")
    return GenerationRequest(prompt="a red ball rolls across a wooden table", frames=args.frames, height=height, width=width,
                             steps=args.steps, seed=0, vae_tiling=args.tiling, model=choice)


def child(args: argparse.Namespace) -> None:
    """Measure one offload mode; print one JSON line (stage -> peak bytes, and the plan)."""
    import torch

    from cogvid.memory_plan import plan_for
    from cogvid.pipeline import load
    from cogvid.prepare import prepare

    torch.set_num_threads(args.threads)
    prepared = prepare(_request(args, args.child))
    baseline_rss = _rss()
    cuda = torch.device(args.device).type == "cuda" if args.device != "auto" else torch.cuda.is_available()
    peaks: dict[str, int] = {}
    if cuda:
        def on_event(event: Any) -> None:
            if event.kind in ("stage", "stage_done"):
                torch.cuda.synchronize()
            if event.kind == "stage":
                torch.cuda.reset_peak_memory_stats()
            elif event.kind == "stage_done":
                peaks[event.stage] = torch.cuda.max_memory_allocated()

        pipe = load(resolved=prepared.model, progress=on_event)
        with torch.no_grad():
            pipe.run(prepared, callback=on_event)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from fixtures.alloc_tracker import measure_stages

        pipe = load(resolved=prepared.model)
        peaks = measure_stages(pipe, prepared)
    plan = plan_for(prepared, device="cuda" if cuda else "cpu")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"offload": args.child, "vae_tiling": bool(args.tiling), "measured": peaks, "plan": plan.to_json(),
                      "host_rss_growth": peak_rss - baseline_rss}))


def _rss() -> int:
    """Resident bytes of this process now (Linux), 0 where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _rows(record: dict[str, Any]) -> list[str]:
    plan = {stage["stage"]: stage for stage in record["plan"]["stages"]}
    rows = []
    for stage, measured in record["measured"].items():
        estimate = plan.get(stage, {}).get("total")
        ratio = f"{estimate / measured:6.3f}" if estimate and measured else "     -"
        shown = f"{estimate / GIB:9.3f}" if estimate else "        -"
        rows.append(f"{record['offload']:<7} {str(record['vae_tiling']):<6} {stage:<10} {measured / GIB:10.3f} {shown} {ratio}")
    growth, planned = record["host_rss_growth"], record["plan"]["host_ram"]
    rows.append(f"{record['offload']:<7} {str(record['vae_tiling']):<6} {'host RAM':<10} {growth / GIB:10.3f} "
                f"{planned / GIB:9.3f} {planned / growth if growth > 0 else 0:6.3f}  (peak RSS growth from loading on)")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default=None, help="registry model (default: the default model)")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--size", default=None, help="HxW (default: the model's)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (the peak repeats every step)")
    parser.add_argument("--offload", default="none,text,model,blocks", help="comma-separated modes")
    parser.add_argument("--tiling", action="store_true", help="decode in tiles")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return []
    modes = [mode.strip() for mode in args.offload.split(",") if mode.strip()]
    records = []
    for mode in modes:
        command = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--device", args.device,
                   "--threads", str(args.threads)]
        for flag, value in (("--model", args.model), ("--weights", args.weights), ("--size", args.size), ("--frames", args.frames)):
            if value is not None:
                command += [flag, str(value)]
        if args.tiling:
            command.append("--tiling")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise SystemExit(f"offload {mode}: the measurement failed (exit {result.returncode})")
        records.append(json.loads(result.stdout.strip().splitlines()[-1]))
    if args.json:
        for record in records:
            print(json.dumps(record))
        return records
    first = records[0]["plan"]
    print(f"{first['model']}: {first['frames']} frames {first['width']}x{first['height']}, {first['dtype']} on {first['device']}")
    print(f"{'offload':<7} {'tiling':<6} {'stage':<10} {'measured':>10} {'plan':>9} {'plan/measured':>6}  (GiB)")
    for record in records:
        for row in _rows(record):
            print(row)
    return records


if __name__ == "__main__":
    main()
