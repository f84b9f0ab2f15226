"""torchrun worker for test_vae_parallel: context-parallel decode of the tiny VAE on CPU (gloo).

Usage: python -m torch.distributed.run --nproc_per_node N cp_worker.py VAE_PT LATENTS_PT OUT_PT
LATENTS_PT maps a schedule name to latents; rank 0 saves {schedule: decoded video} to OUT_PT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (for fixtures)


def main(vae_path: str, latents_path: str, out_path: str) -> None:
    from cogvid.config import instantiate
    from cogvid.vae.parallel import decode_parallel
    from fixtures.tiny_vae import tiny_first_stage_config

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    vae = instantiate(tiny_first_stage_config(ckpt_path=vae_path))
    results = {}
    seen: list[int] = []
    for schedule, z in torch.load(latents_path).items():
        results[schedule] = decode_parallel(vae, z, schedule=schedule, callback=lambda i, n: seen.append(i))
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, seen)
    if dist.get_rank() == 0:
        results["chunks_by_rank"] = gathered
        torch.save(results, out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
