"""Budget: a whole tiny-model t2v generation is no slower than diffusers' pipeline on the same weights.

Usage: python benchmarks/t2v_vs_diffusers.py [--steps 50] [--repeats 3] [--frames 17]
Both pipelines hold the same `cogvideox-tiny` weights (converted for diffusers as the parity tests do),
run the same settings (DPM-Solver++ 2M SDE / CogVideoXDPMScheduler, dynamic CFG 6, same initial
latents), text encoding to decoded frames included, model loading excluded. Prints the median times
and the ratio cogvid / diffusers (goal <= 1.0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "engine")]

PROMPT = "a red circle moving left"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args()

    import cogvid
    from diffusers import CogVideoXDPMScheduler
    from e2e_reference import reference_pipeline

    pipe = cogvid.load("cogvideox-tiny")
    reference = reference_pipeline(pipe, original_alphas=False, num_steps=args.steps)
    reference.scheduler = CogVideoXDPMScheduler.from_config(reference.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    max_length = pipe.engine.conditioner.embedders[0].max_length
    latent_frames = (args.frames - 1) // 4 + 1
    noise = torch.randn((1, latent_frames, 16, 6, 8), generator=torch.Generator().manual_seed(0))

    def run_cogvid() -> None:
        pipe.generate(PROMPT, num_frames=args.frames, steps=args.steps, guidance=6.0, latents=noise, seed=0)

    def run_diffusers() -> None:
        embeds, _ = reference.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=max_length)
        reference(
            prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), num_frames=args.frames,
            height=48, width=64, num_inference_steps=args.steps, guidance_scale=6.0, use_dynamic_cfg=True,
            latents=noise.clone(), output_type="np", max_sequence_length=max_length,
            generator=torch.Generator().manual_seed(0),
        )

    times: dict[str, list[float]] = {"cogvid": [], "diffusers": []}
    run_cogvid(), run_diffusers()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("cogvid", run_cogvid), ("diffusers", run_diffusers)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    ours, theirs = statistics.median(times["cogvid"]), statistics.median(times["diffusers"])
    print(f"tiny t2v, {args.frames} frames 64x48, {args.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"{'pipeline':<10} {'median s':>9} {'runs':>30}")
    for name in times:
        print(f"{name:<10} {statistics.median(times[name]):>9.3f} {', '.join(f'{t:.2f}' for t in times[name]):>30}")
    print(f"ratio cogvid/diffusers: {ours / theirs:.2f} (goal <= 1.0)")


if __name__ == "__main__":
    main()
