"""Sequence-parallel denoising: per-rank peak activation memory and wall time for 1, 2 and 4 processes (CPU, gloo).

A CogVideoX-5B-structured DiT (3D RoPE, qk-LayerNorm, AdaLN experts, 226 T5 tokens) with random
weights and a chosen width runs the model's own sampler (VP-SDE DPM-Solver++ with guidance: each
step is one DiT call on the [uncond; cond] batch) under ``torchrun --nproc_per_node N`` with
``--parallel sequence`` (each rank: the text tokens, 1/N of the video tokens, heads/N heads in
attention). Each rank counts the bytes of the tensors alive during denoising (every storage an op
creates, until it is freed; weights, inputs and views of them are not counted) and keeps the peak.

Prints a table (processes, per-rank peak activation MiB, ratio to one process, seconds per step,
wall-time ratio, latents' max relative difference to one process) and one JSON line. CPU
collectives (gloo) are slow and the processes share this machine's cores: the times say what the
split costs here, not what GPUs (NCCL) would do.

    python benchmarks/parallel_denoise.py [--hidden 1024 --heads 16 --layers 2 --frames 7 --height 40 --width 56]
    python benchmarks/parallel_denoise.py --smoke     # seconds: the benchmark smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT_TOKENS, TEXT_WIDTH = 226, 4096  # the released models' T5 sequence and width


def _live_bytes_mode(existing):
    """A dispatch mode that tracks the bytes of every storage an op creates under it until it is freed.

    Views alias what exists, and storages of ``existing`` tensors (weights, inputs) are never counted.
    """
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, tuple[StorageWeakRef, int]] = {}
            self.current = self.peak = 0
            self.existing = {t.untyped_storage().data_ptr() for t in existing}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
                self.current -= self.live.pop(key)[1]
            for value in [] if func.is_view else tree_leaves(out):
                if isinstance(value, torch.Tensor) and value.device.type != "meta":
                    storage = value.untyped_storage()
                    key = storage.data_ptr()
                    if key not in self.live and key not in self.existing and storage.nbytes():
                        self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                        self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            return out

    return LiveBytes()


def child(args: argparse.Namespace) -> None:
    """One rank: build the DiT, denoise once, report (rank 0 writes every rank's numbers)."""
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from cogvid.config import instantiate, load_config
    from cogvid.diffusion import sampler_config_for
    from cogvid.dit import build_dit
    from cogvid.engine import DiTWrapper
    from cogvid.parallel import ParallelPlan
    from cogvid.parallel.runtime import ParallelRuntime
    from cogvid.registry import get_model

    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = load_config(list(get_model("cogvideox-5b").config_files()))
    net = cfg.model.network_config.params
    net.hidden_size, net.num_layers, net.num_attention_heads = args.hidden, args.layers, args.heads
    net.time_embed_dim = args.hidden // 2
    net.latent_height, net.latent_width = args.height, args.width
    net.num_frames = (args.frames - 1) * 4 + 1
    net.modules.pos_embed_config.params.hidden_size_head = args.hidden // args.heads
    torch.manual_seed(0)  # the same random weights in every process
    network = build_dit(cfg.model.network_config, dtype=torch.float32).eval()
    model = DiTWrapper(network, torch.float32)
    denoiser = instantiate(cfg.model.denoiser_config)
    sampler = instantiate(sampler_config_for(cfg.model.sampler_config, args.steps, 6.0))

    def denoise(x, sigma, cond, **extra):
        return denoiser(model, x, sigma, cond, **extra)

    generator = torch.Generator().manual_seed(0)
    text = torch.randn(1, TEXT_TOKENS, TEXT_WIDTH, generator=generator)
    noise = torch.randn(1, args.frames, 16, args.height, args.width, generator=generator)
    cond, uncond = {"crossattn": text}, {"crossattn": torch.zeros_like(text)}
    runtime = ParallelRuntime(ParallelPlan("sequence", world, sequence=world), torch.device("cpu")) if world > 1 else None
    tracker = _live_bytes_mode([*network.parameters(), *network.buffers(), text, noise, cond["crossattn"], uncond["crossattn"]])
    with torch.no_grad():
        context = runtime.denoising(network, denoise, 1) if runtime else _plain(denoise)
        with context as run:
            if runtime:
                dist.barrier()
            started = time.perf_counter()
            with tracker:
                latents = sampler(run, noise, cond, uc=uncond, generator=torch.Generator().manual_seed(1))
            seconds = time.perf_counter() - started
    record = {"rank": int(os.environ.get("RANK", "0")), "peak_bytes": tracker.peak, "seconds": seconds}
    records = [record]
    if runtime:
        records = [None] * world
        dist.all_gather_object(records, record)
    if records[0]["rank"] == 0 and int(os.environ.get("RANK", "0")) == 0:
        torch.save(latents, args.out + ".latents.pt")
        Path(args.out).write_text(json.dumps(records))
    if runtime:
        dist.destroy_process_group()


class _plain:
    def __init__(self, denoise):
        self.denoise = denoise

    def __enter__(self):
        return self.denoise

    def __exit__(self, *exc):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(procs: int, args: argparse.Namespace, out: Path) -> list[dict]:
    options = ["--hidden", args.hidden, "--heads", args.heads, "--layers", args.layers, "--frames", args.frames,
               "--height", args.height, "--width", args.width, "--steps", args.steps, "--threads", args.threads]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), __file__, "--child", "--out", str(out), *map(str, options)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{result.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=7, help="latent frames")
    parser.add_argument("--height", type=int, default=40, help="latent rows (pixels / 8)")
    parser.add_argument("--width", type=int, default=56, help="latent columns (pixels / 8)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--procs", default="1,2,4", help="process counts to compare, the first one the reference")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, 1 and 2 processes, 1 step")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.smoke:
        args.hidden, args.heads, args.layers, args.frames, args.height, args.width, args.steps = 64, 4, 1, 3, 8, 8, 1
        args.procs = "1,2"
    import torch

    tokens = args.frames * (args.height // 2) * (args.width // 2)
    print(f"DiT: hidden {args.hidden}, {args.heads} heads, {args.layers} layers; {tokens} video + {TEXT_TOKENS} text tokens, "
          f"guidance batch 2, {args.steps} step(s), {args.threads} thread(s) per process", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        reference = None
        for procs in [int(p) for p in args.procs.split(",")]:
            out = Path(folder) / f"run{procs}.json"
            records = _run(procs, args, out)
            latents = torch.load(str(out) + ".latents.pt", weights_only=True)
            reference = latents if reference is None else reference
            diff = ((latents - reference).abs().max() / reference.abs().max()).item()
            rows.append({"processes": procs, "peak_mib": max(r["peak_bytes"] for r in records) / 2**20,
                         "seconds_per_step": max(r["seconds"] for r in records) / args.steps, "max_rel_diff": diff})
    base = rows[0]
    print(f"{'procs':>5} {'peak MiB/rank':>14} {'x 1 proc':>9} {'s/step':>8} {'x 1 proc':>9} {'rel diff':>9}")
    for row in rows:
        row["memory_ratio"] = row["peak_mib"] / base["peak_mib"]
        row["time_ratio"] = row["seconds_per_step"] / base["seconds_per_step"]
        print(f"{row['processes']:>5} {row['peak_mib']:>14.1f} {row['memory_ratio']:>9.3f} {row['seconds_per_step']:>8.2f} "
              f"{row['time_ratio']:>9.2f} {row['max_rel_diff']:>9.1e}")
    print(json.dumps({"tokens": tokens, "text_tokens": TEXT_TOKENS, "hidden": args.hidden, "heads": args.heads, "rows": rows}))


if __name__ == "__main__":
    main()
