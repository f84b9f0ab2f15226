"""VAE decode budget: peak memory must follow the chunk size, not the clip length.

Each measurement runs in a fresh subprocess (random weights of a VAE with the released structure
at a chosen width), so its peak resident memory (``ru_maxrss``) belongs to that decode alone.
Prints a table: allocator setting, latent frames, output frames, tiling, peak RSS, RSS growth
during the decode, and seconds per output frame. The goal: 13 latents peak within 20% of 5.

    python benchmarks/vae_decode.py [--ch 32] [--res-blocks 2] [--size 64] [--threads 2] [--smoke]

``--smoke`` decodes a VAE of width 32 (the least GroupNorm allows) without extra ResNet blocks,
16x16 pixels on one thread, and skips the untiled run with the fixed threshold (checks that it
runs, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time


def _config(ch: int, res_blocks: int) -> dict:
    coder = {
        "double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": ch,
        "ch_mult": [1, 2, 2, 4], "attn_resolutions": [], "num_res_blocks": res_blocks, "dropout": 0.0,
    }
    return {
        "target": "vae_modules.autoencoder.VideoAutoencoderInferenceWrapper",
        "params": {
            "cp_size": 1,
            "ckpt_path": None,
            "ignore_keys": ["loss"],
            "loss_config": {"target": "torch.nn.Identity"},
            "regularizer_config": {"target": "vae_modules.regularizers.DiagonalGaussianRegularizer"},
            "encoder_config": {"target": "vae_modules.cp_enc_dec.ContextParallelEncoder3D", "params": coder},
            "decoder_config": {"target": "vae_modules.cp_enc_dec.ContextParallelDecoder3D", "params": coder},
        },
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    """Build the VAE, decode once, print one JSON line."""
    import torch

    from cogvid.config import instantiate

    torch.set_num_threads(args.threads)
    vae = instantiate(_config(args.ch, args.res_blocks))
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, tensor in vae.state_dict().items():
        fan_in = math.prod(tensor.shape[1:]) if tensor.dim() > 1 else 0
        noise = torch.randn(tensor.shape, generator=generator)
        state[name] = noise / math.sqrt(fan_in) if fan_in else 1.0 + 0.1 * noise
    vae.load_state_dict(state, assign=True)
    del state
    latent = args.size // 8
    z = torch.randn(1, 16, args.latent_frames, latent, latent, generator=generator)
    before = _peak_rss_mib()
    start = time.perf_counter()
    frames = vae.decode(z, tiling=args.tiling, tile_size=max(2, latent * 3 // 4), tile_overlap=max(1, latent // 4))
    seconds = time.perf_counter() - start
    print(json.dumps({
        "latent_frames": args.latent_frames, "frames": frames.shape[2], "tiling": args.tiling,
        "peak_mib": _peak_rss_mib(), "growth_mib": _peak_rss_mib() - before, "s_per_frame": seconds / frames.shape[2],
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ch", type=int, default=32, help="base width (released VAE: 128)")
    parser.add_argument("--res-blocks", type=int, default=2, help="ResNet blocks per level (released: 3)")
    parser.add_argument("--size", type=int, default=64, help="output height and width in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a VAE of width 32, 16x16 px: checks that it runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latent-frames", type=int, default=13, help=argparse.SUPPRESS)
    parser.add_argument("--tiling", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.ch, args.res_blocks, args.size, args.threads = 32, 0, 16, 1
    if args.child:
        child(args)
        return
    # glibc raises its mmap threshold after large frees, so freed activations stay in the heap and
    # RSS creeps up chunk after chunk; a fixed threshold shows the memory the decode really holds.
    allocators = {"glibc default": {}, "fixed mmap threshold": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}
    runs = [("glibc default", False), ("fixed mmap threshold", False), ("fixed mmap threshold", True)]
    if args.smoke:
        runs = [runs[0], runs[2]]  # both allocators, with and without tiling, in four children instead of six
    rows = []
    for allocator, tiling in runs:
        for latent_frames in (5, 13):
            command = [sys.executable, __file__, "--child", "--latent-frames", str(latent_frames), "--ch", str(args.ch),
                       "--res-blocks", str(args.res_blocks), "--size", str(args.size), "--threads", str(args.threads)]
            if tiling:
                command.append("--tiling")
            env = {**os.environ, **allocators[allocator]}
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "allocator": allocator})
    print(f"VAE decode, ch {args.ch}, {args.res_blocks} res blocks, {args.size}x{args.size} px, {args.threads} threads")
    print(f"{'allocator':>21} {'latents':>8} {'frames':>7} {'tiling':>7} {'peak RSS MiB':>13} {'decode growth MiB':>18} {'s/frame':>8}")
    for row in rows:
        print(f"{row['allocator']:>21} {row['latent_frames']:>8} {row['frames']:>7} {str(row['tiling']):>7} "
              f"{row['peak_mib']:>13.1f} {row['growth_mib']:>18.1f} {row['s_per_frame']:>8.3f}")
    for allocator, tiling in runs:
        five, thirteen = (r for r in rows if r["allocator"] == allocator and r["tiling"] is tiling)
        print(f"{allocator}, tiling={tiling}: peak RSS 13 vs 5 latents "
              f"{100 * (thirteen['peak_mib'] / five['peak_mib'] - 1):+.1f}%, decode growth "
              f"{100 * (thirteen['growth_mib'] / max(five['growth_mib'], 1e-9) - 1):+.1f}%")


if __name__ == "__main__":
    main()
