"""Compiled blocks and int8 weights on the CPU: a mid-size DiT's forward, eager vs compiled, and int8wo.

Usage: python benchmarks/speed_cpu.py [--hidden 512 --layers 2 --frames 8 --size 32 --pairs 5 --threads 1]
       python benchmarks/speed_cpu.py --smoke     (a tiny DiT, one pair, the eager backend: the smoke test)

One run measures, on a DiT of the 5B's layout (RoPE, patch 2, 4096-wide text; random weights) at
batch 2 (guidance's pair), with --frames x --size x --size latents:
* compiled (--compile: torch.compile of each block, one compilation) vs eager forward time, as the
  median ratio over interleaved pairs (the machine is shared), and the largest output difference;
* int8wo (--quantize int8wo, torchao): DiT weight (parameter) bytes vs bf16 (and with the recomputable
  RoPE buffers), output error vs the bf16 model,
  and int8wo vs bf16 forward time (median ratio of interleaved pairs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(first, second, pairs: int) -> tuple[float, float, float]:  # noqa: ANN001
    """Median seconds of each and the median of the per-pair ratios second/first."""
    a, b = [], []
    for _ in range(pairs):
        a.append(timed(first))
        b.append(timed(second))
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8, help="latent frames")
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (the smoke test uses eager)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one pair, eager backend")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hidden, args.layers, args.heads, args.frames, args.size, args.pairs, args.backend = 64, 1, 1, 2, 4, 1, "eager"
    import torch

    import _dit_models as models
    from cogvid.speed.blocks import BlockStack
    from cogvid.speed.quantize import import_torchao_quietly, module_bytes, quantize_dit_

    import_torchao_quietly()
    torch.set_num_threads(args.threads)
    params = models.mid_size_params(hidden=args.hidden, layers=args.layers, heads=args.heads)
    model, state = models.sat_dit(params, 0, "cpu", torch.float32)
    data = models.inputs(params, args.frames, args.size, args.size, "cpu", torch.float32)
    tokens = models.tokens(params, args.frames, args.size, args.size)

    def forward(net, batch=data):  # noqa: ANN001, ANN202
        with torch.no_grad():
            return net(batch["x"], timesteps=batch["timesteps"], context=batch["context"])

    eager_stack = BlockStack(model)
    compiled_stack = BlockStack(model, compiled=True)
    if args.backend != "inductor":
        compiled_stack.runners = [torch.compile(block, backend=args.backend) for block in compiled_stack.blocks]

    def use(stack):  # noqa: ANN001, ANN202
        def run() -> torch.Tensor:
            model.speed_blocks = stack
            return forward(model)
        return run

    reference = forward(model)  # SAT's own layer loop
    compile_seconds = timed(use(compiled_stack))
    compiled_error = float((use(compiled_stack)() - reference).abs().max())
    eager_s, compiled_s, compile_ratio = interleaved(use(eager_stack), use(compiled_stack), args.pairs)
    model.speed_blocks = None

    bf16_model, _ = models.sat_dit(params, 0, "cpu", torch.bfloat16)
    bf16_data = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in data.items()}
    bf16_out = forward(bf16_model, bf16_data).float()
    bf16_bytes, bf16_state_bytes = module_bytes(bf16_model, buffers=False), module_bytes(bf16_model)
    int8_model, _ = models.sat_dit(params, 0, "cpu", torch.bfloat16)
    quantize_dit_(int8_model, "int8wo")
    int8_bytes, int8_state_bytes = module_bytes(int8_model, buffers=False), module_bytes(int8_model)
    int8_out = forward(int8_model, bf16_data).float()
    int8_error = float((int8_out - bf16_out).abs().max())
    bf16_s, int8_s, int8_ratio = interleaved(lambda: forward(bf16_model, bf16_data), lambda: forward(int8_model, bf16_data), args.pairs)

    result = {
        "hidden": args.hidden, "layers": args.layers, "tokens": tokens, "batch": 2, "threads": args.threads, "pairs": args.pairs,
        "eager_s": eager_s, "compiled_s": compiled_s, "compiled_over_eager": compile_ratio, "first_compiled_call_s": compile_seconds,
        "compiled_max_error": compiled_error, "output_max_abs": float(reference.abs().max()),
        "bf16_bytes": bf16_bytes, "int8wo_bytes": int8_bytes, "int8wo_over_bf16_bytes": int8_bytes / bf16_bytes,
        "int8wo_over_bf16_state_bytes": int8_state_bytes / bf16_state_bytes,
        "int8wo_max_error": int8_error, "bf16_output_max_abs": float(bf16_out.abs().max()),
        "bf16_s": bf16_s, "int8wo_s": int8_s, "int8wo_over_bf16_time": int8_ratio,
    }
    print(f"DiT hidden {args.hidden}, {args.layers} layers, {tokens} tokens, batch 2, {args.threads} thread(s), "
          f"{args.pairs} interleaved pairs, compile backend {args.backend}")
    print(f"  fp32 eager {eager_s:.3f} s, compiled {compiled_s:.3f} s: ratio compiled/eager {compile_ratio:.2f} "
          f"(first compiled call {compile_seconds:.1f} s); max |compiled - eager| {compiled_error:.2e} (outputs up to {result['output_max_abs']:.2f})")
    print(f"  int8wo weights {int8_bytes / 2**20:.1f} MiB vs bf16 {bf16_bytes / 2**20:.1f} MiB: ratio {result['int8wo_over_bf16_bytes']:.3f} "
          f"({result['int8wo_over_bf16_state_bytes']:.3f} with the RoPE buffers); "
          f"max |int8wo - bf16| {int8_error:.3f} (outputs up to {result['bf16_output_max_abs']:.2f})")
    print(f"  bf16 {bf16_s:.3f} s, int8wo {int8_s:.3f} s: ratio int8wo/bf16 {int8_ratio:.2f}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
