"""DiT seconds per step and peak memory on one GPU, cogvid beside diffusers, for each speed option.

Usage: python benchmarks/gpu.py [--models cogvideox-2b,cogvideox-5b] [--steps 3] [--cache-steps 50] [--layers N]
       python benchmarks/gpu.py --smoke      (a tiny DiT on the CPU: what the smoke test runs)
       python benchmarks/gpu.py --memory [gpu_memory.py's options]   (peak memory per stage beside the plan)

For each model it builds the transformer at its real size in the released layout (random weights),
and the same weights in diffusers' CogVideoXTransformer3DModel, both in the model's dtype, and times
one denoising step (a forward of batch 2, guidance's pair) at 49 x 480 x 720 (13 x 60 x 90 latents):
median of --steps steps after a warm-up (compilation excluded), peak memory per mode, and the
ratio cogvid / diffusers. Modes: eager; compile (each block compiled once, both sides); fp8dq +
compile (torchao float8 dynamic activations and per-row weights, both sides; needs compute
capability 8.9+); teacache (cogvid only, at the default threshold with the model's published
coefficients: the whole --cache-steps schedule is run and divided by its length).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def step_seconds(fn: Any, steps: int, sync: Any) -> float:
    """Median seconds of ``steps`` calls of ``fn`` after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--memory" in argv:
        import gpu_memory

        gpu_memory.main([arg for arg in argv if arg != "--memory"])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cogvideox-2b,cogvideox-5b")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=13, help="latent frames (13: 49 video frames)")
    parser.add_argument("--height", type=int, default=60, help="latent height (60: 480 px)")
    parser.add_argument("--width", type=int, default=90, help="latent width (90: 720 px)")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the model's (default: all)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--cache-steps", type=int, default=50, help="schedule length of the teacache run")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--modes", default="eager,teacache,compile,fp8dq+compile")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a tiny DiT on the CPU, one step per mode, eager backend")
    args = parser.parse_args(argv)
    import torch

    import _dit_models as models
    from cogvid.devices import resolve_device, torch_dtype
    from cogvid.registry import get_model
    from cogvid.speed.quantize import import_torchao_quietly

    import_torchao_quietly()
    device = resolve_device(args.device if not args.smoke else "cpu")
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    for name in args.models.split(","):
        overrides: dict[str, Any] = {"num_layers": args.layers} if args.layers else {}
        dtype = torch_dtype(get_model(name).dtype) if cuda else torch.float32
        frames, height, width = args.frames, args.height, args.width
        if args.smoke:
            overrides = {"num_layers": 1, "hidden_size": 64, "num_attention_heads": 1, "time_embed_dim": 64}
            frames, height, width, args.steps, args.cache_steps, args.backend = 2, 4, 4, 1, 4, "eager"
        params = models.network_params(name, **overrides)
        if "hidden_size_head" in params["modules"]["pos_embed_config"]["params"]:
            params["modules"]["pos_embed_config"]["params"]["hidden_size_head"] = params["hidden_size"] // params["num_attention_heads"]
        ours, state = models.sat_dit(params, 0, device, dtype)
        theirs = models.diffusers_dit(params, state, device, dtype)
        del state
        data = models.inputs(params, frames, height, width, device, dtype)
        label = f"{name} ({params['num_layers']} layers, {models.tokens(params, frames, height, width)} tokens, {str(dtype)[6:]})"
        for mode in args.modes.split(","):
            row = {"model": name, "label": label, "mode": mode}
            try:
                row.update(run_mode(mode, ours, theirs, params, data, args, device, sync))
            except Exception as e:  # noqa: BLE001 (a mode this device cannot run is reported, the rest goes on)
                row["skipped"] = f"{type(e).__name__}: {getattr(e, 'message', e)}"[:160]
            rows.append(row)
        del ours, theirs
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    print(f"{'model':<58} {'mode':<15} {'cogvid s/step':>13} {'diffusers':>10} {'ratio':>6} {'cogvid GiB':>10} {'diff. GiB':>9}  note")
    for row in rows:
        if "skipped" in row:
            print(f"{row['label']:<58} {row['mode']:<15} {'n/a':>13} {'':>10} {'':>6} {'':>10} {'':>9}  {row['skipped']}")
            continue
        theirs_s = row.get("diffusers_s")
        ratio = f"{row['cogvid_s'] / theirs_s:.2f}" if theirs_s else ""
        theirs_text = f"{theirs_s:.3f}" if theirs_s else "-"
        print(f"{row['label']:<58} {row['mode']:<15} {row['cogvid_s']:>13.3f} {theirs_text:>10}"
              f" {ratio:>6} {_gib(row.get('cogvid_peak')):>10} {_gib(row.get('diffusers_peak')):>9}  {row.get('note', '')}")
        if args.json:
            print(json.dumps(row))
    return 0


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.1f}" if value else ""


def run_mode(mode: str, ours: Any, theirs: Any, params: dict, data: dict, args: Any, device: Any, sync: Any) -> dict[str, Any]:
    """Time one mode on both sides (teacache: cogvid only); changes the models (compile, quantize) for the modes after it."""
    import torch

    import _dit_models as models
    from cogvid.speed.blocks import BlockStack

    cuda = device.type == "cuda"

    def ours_step() -> None:
        with torch.no_grad():
            ours(data["x"], timesteps=data["timesteps"], context=data["context"])

    def theirs_step() -> None:
        with torch.no_grad():
            models.diffusers_call(theirs, params, data)

    def measured(fn: Any, steps: int) -> tuple[float, int | None]:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = step_seconds(fn, steps, sync)
        return seconds, torch.cuda.max_memory_allocated(device) if cuda else None

    result: dict[str, Any] = {}
    if mode == "eager":
        ours.speed_blocks = None
    elif mode == "teacache":
        return run_teacache(ours, data, args, sync, device)
    elif mode in ("compile", "fp8dq+compile"):
        if mode == "fp8dq+compile":
            from cogvid.speed.options import FP8_MIN_CAPABILITY
            from cogvid.speed.quantize import quantize_dit_, torchao_config

            if not cuda or torch.cuda.get_device_capability(device) < FP8_MIN_CAPABILITY:
                raise RuntimeError("fp8 needs a CUDA GPU of compute capability 8.9+")
            from torchao.quantization import quantize_

            quantize_dit_(ours, "fp8dq")
            quantize_(theirs.transformer_blocks, torchao_config("fp8dq"))
        stack = BlockStack(ours, compiled=True)
        if args.backend != "inductor":
            stack.runners = [torch.compile(block, backend=args.backend) for block in stack.blocks]
        ours.speed_blocks = stack
        for block in theirs.transformer_blocks:
            block.compile(backend=args.backend)
        started = time.perf_counter()
        ours_step(), theirs_step()
        sync()
        result["note"] = f"first calls (compilation) {time.perf_counter() - started:.0f} s"
    else:
        raise ValueError(f"unknown mode {mode!r}")
    result["cogvid_s"], result["cogvid_peak"] = measured(ours_step, args.steps)
    result["diffusers_s"], result["diffusers_peak"] = measured(theirs_step, args.steps)
    return result


def run_teacache(ours: Any, data: dict, args: Any, sync: Any, device: Any) -> dict[str, Any]:
    """The whole schedule with TeaCache (default threshold, published coefficients): seconds per step, steps skipped."""
    import torch

    from cogvid.speed.cache import TeaCache, step_cache
    from cogvid.speed.calibration import PUBLISHED
    from cogvid.speed.options import DEFAULT_THRESHOLDS

    coefficients = PUBLISHED.get(args_model(ours), PUBLISHED["cogvideox-5b"])
    cache = TeaCache(DEFAULT_THRESHOLDS["teacache"], args.cache_steps, coefficients)
    timesteps = torch.linspace(999, 0, args.cache_steps).round().long()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with torch.no_grad(), step_cache(ours, cache):
        for t in timesteps:
            ours(data["x"], timesteps=t.repeat(data["x"].shape[0]).to(device), context=data["context"])
    sync()
    seconds = (time.perf_counter() - started) / args.cache_steps
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"cogvid_s": seconds, "cogvid_peak": peak, "note": f"{cache.skipped} of {cache.forwards} steps skipped"}


def args_model(dit: Any) -> str:
    """The registry name whose published TeaCache coefficients fit this DiT (2B: sin-cos positions)."""
    from cogvid.speed.blocks import BlockStack

    return "cogvideox-5b" if BlockStack(dit).rotary is not None else "cogvideox-2b"


if __name__ == "__main__":
    raise SystemExit(main())
