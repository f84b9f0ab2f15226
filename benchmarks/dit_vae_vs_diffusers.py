"""A DiT step and a VAE decode, cogvid beside diffusers in one run, eager and compiled, at the real widths.

Usage: python benchmarks/dit_vae_vs_diffusers.py [--layers 2 --frames 4 --size 16 --pairs 5 --threads 1]
       python benchmarks/dit_vae_vs_diffusers.py --smoke     (tiny widths, one pair, eager backend)

DiT: the 5B's widths (hidden 3072, 48 heads of 64, 4096-wide text, 226 tokens of it) with --layers
layers, random weights, the same weights in diffusers' CogVideoXTransformer3DModel; one step = a
forward of batch 2. Compiled: each block compiled once on both sides (cogvid's --compile; diffusers'
blocks with ``block.compile()``). VAE: the released decoder's widths (ch 128, ch_mult 1-2-2-4) with
--res-blocks ResNet blocks per level, the same weights in diffusers' AutoencoderKLCogVideoX, decoding
5 latent frames (the chunks [0:3], [3:5] on both sides). Each comparison is a run of interleaved
pairs (cogvid, then diffusers); printed are the median seconds and the median ratio cogvid/diffusers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pairs_of(ours, theirs, pairs: int) -> dict[str, float]:  # noqa: ANN001
    """Median seconds of each side over interleaved pairs and the median per-pair ratio ours/theirs."""
    ours(), theirs()  # warm-up (and compilation)
    a, b = [], []
    for _ in range(pairs):
        for fn, times in ((ours, a), (theirs, b)):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return {"cogvid_s": statistics.median(a), "diffusers_s": statistics.median(b),
            "ratio": statistics.median(x / y for x, y in zip(a, b))}


def vae_pair(ch: int, res_blocks: int):  # noqa: ANN201
    """cogvid's VAE and diffusers' with the same random weights."""
    from fixtures.tiny_vae import tiny_first_stage_config, tiny_vae_state_dict
    from fixtures.vae_diffusers import diffusers_vae

    from cogvid.config import instantiate

    ch_mult = [1, 2, 2, 4]
    config = tiny_first_stage_config(coder={"ch": ch, "ch_mult": ch_mult, "num_res_blocks": res_blocks})
    state = tiny_vae_state_dict(0, config)
    ours = instantiate(config)
    ours.load_state_dict(state, strict=False, assign=True)  # built on meta without a ckpt_path
    theirs = diffusers_vae(state, ch, ch_mult, res_blocks)
    return ours.eval(), theirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=3072)
    parser.add_argument("--heads", type=int, default=48)
    parser.add_argument("--frames", type=int, default=4, help="DiT latent frames")
    parser.add_argument("--size", type=int, default=16, help="DiT latent height and width")
    parser.add_argument("--ch", type=int, default=128, help="VAE base width (released: 128)")
    parser.add_argument("--res-blocks", type=int, default=1, help="VAE ResNet blocks per level (released: 3)")
    parser.add_argument("--vae-size", type=int, default=8, help="VAE latent height and width")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny widths, one pair, the eager backend")
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.hidden, args.heads, args.frames, args.size = 1, 64, 1, 2, 4
        args.ch, args.vae_size, args.pairs, args.backend = 32, 4, 1, "eager"
    import torch

    import _dit_models as models
    from cogvid.speed.blocks import BlockStack
    from cogvid.speed.quantize import import_torchao_quietly

    import_torchao_quietly()
    torch.set_num_threads(args.threads)
    params = models.mid_size_params(hidden=args.hidden, layers=args.layers, heads=args.heads)
    ours, state = models.sat_dit(params, 0, "cpu", torch.float32)
    theirs = models.diffusers_dit(params, state, "cpu", torch.float32)
    data = models.inputs(params, args.frames, args.size, args.size, "cpu", torch.float32)

    def ours_step() -> torch.Tensor:
        with torch.no_grad():
            return ours(data["x"], timesteps=data["timesteps"], context=data["context"])

    def theirs_step() -> torch.Tensor:
        with torch.no_grad():
            return models.diffusers_call(theirs, params, data)

    rows = [{"part": "DiT step", "mode": "eager", **pairs_of(ours_step, theirs_step, args.pairs),
             "max_diff": float((ours_step() - theirs_step()).abs().max())}]
    stack = BlockStack(ours, compiled=True)
    stack.runners = [torch.compile(block, backend=args.backend) for block in stack.blocks]
    ours.speed_blocks = stack
    for block in theirs.transformer_blocks:
        block.compile(backend=args.backend)
    rows.append({"part": "DiT step", "mode": "compiled", **pairs_of(ours_step, theirs_step, args.pairs),
                 "max_diff": float((ours_step() - theirs_step()).abs().max())})

    vae, reference = vae_pair(args.ch, args.res_blocks)
    z = torch.randn(1, 16, 5, args.vae_size, args.vae_size, generator=torch.Generator().manual_seed(1))

    def ours_decode() -> torch.Tensor:
        with torch.no_grad():
            return vae.decode(z, schedule="1.0")

    def theirs_decode() -> torch.Tensor:
        with torch.no_grad():
            return reference.decode(z).sample

    rows.append({"part": "VAE decode", "mode": "eager", **pairs_of(ours_decode, theirs_decode, args.pairs),
                 "max_diff": float((ours_decode() - theirs_decode()).abs().max())})
    tokens = models.tokens(params, args.frames, args.size, args.size)
    print(f"DiT hidden {args.hidden}, {args.layers} layers, {tokens} tokens, batch 2; VAE ch {args.ch}, {args.res_blocks} res "
          f"block(s), 5 latents {args.vae_size}x{args.vae_size}; {args.threads} thread(s), {args.pairs} interleaved pairs")
    print(f"{'part':<11} {'mode':<9} {'cogvid s':>9} {'diffusers s':>12} {'median ratio':>13} {'max |diff|':>11}")
    for row in rows:
        print(f"{row['part']:<11} {row['mode']:<9} {row['cogvid_s']:>9.3f} {row['diffusers_s']:>12.3f} {row['ratio']:>13.2f} {row['max_diff']:>11.2e}")
        if args.json:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
