"""torchrun worker for the parallel-denoising tests: make the videos of a job list with ``--parallel`` modes.

Usage: python -m torch.distributed.run --nproc_per_node N worker.py JOBS_JSON OUT_DIR
JOBS_JSON is a list of {"name", "configs", "mode", "image", "height", "width", "frames", "seed", "steps"}.
Rank 0 saves OUT_DIR/NAME.pt = {"frames": uint8 (F, H, W, 3), "latents": (1, T, C, h, w), "metadata"};
OUT_DIR/ranks.json records, per rank, how many times each rank ran the text encoder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main(jobs_path: str, out_dir: str) -> None:
    from cogvid.parallel import my_share
    from cogvid.pipeline import load
    from cogvid.prepare import prepare
    from cogvid.request import GenerationRequest, ModelChoice

    torch.set_num_threads(1)
    out = Path(out_dir)
    jobs = json.loads(Path(jobs_path).read_text())
    text_calls = 0
    for job in jobs:
        request = GenerationRequest(
            prompt="a red ball rolls", image=job["image"], frames=job["frames"], height=job["height"], width=job["width"],
            steps=job["steps"], seed=job["seed"], model=ModelChoice(configs=tuple(job["configs"]), parallel=job["mode"]),
        )
        prepared = prepare(request)
        assert prepared.parallel.mode == job["expect"], (prepared.parallel, job)
        pipe = load(resolved=prepared.model, text_encoder=my_share(prepared).encodes_text)  # T5 on rank 0 only
        original = pipe.engine.encode_text

        def counting(*args, _original=original, **kwargs):
            nonlocal text_calls
            text_calls += 1
            return _original(*args, **kwargs)

        pipe.engine.encode_text = counting
        video = pipe.run(prepared)
        if dist.get_rank() == 0:
            torch.save({"frames": torch.from_numpy(video.frames), "latents": video.latents, "metadata": video.metadata},
                       out / f"{job['name']}.pt")
    counts = [None] * dist.get_world_size()
    dist.all_gather_object(counts, text_calls)
    if dist.get_rank() == 0:
        (out / "ranks.json").write_text(json.dumps({"text_calls": counts}))
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (fixtures)
    main(*sys.argv[1:3])
