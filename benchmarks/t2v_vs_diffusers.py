"""Budget: a whole tiny-model t2v generation is no slower than diffusers' pipeline on the same weights.

Usage: python benchmarks/t2v_vs_diffusers.py [--model cogvideox-tiny] [--steps 50] [--repeats 3] [--frames F] [--smoke]
Both pipelines hold the same weights (the shipped `cogvideox-tiny` by default, converted for diffusers
as the parity tests do), run the same settings (DPM-Solver++ 2M SDE / CogVideoXDPMScheduler, dynamic
CFG 6, same initial latents) at the model's own size, text encoding to decoded frames included, model
loading excluded. Prints the median times and the ratio cogvid / diffusers (goal <= 1.0).
``--smoke``: 2 steps, 1 repeat (checks that it runs, not a measurement).
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
    parser.add_argument("--model", default="cogvideox-tiny", help="a registry name (a 1.0 text-to-video model)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=None, help="default: the model's")
    parser.add_argument("--smoke", action="store_true", help="2 steps, 1 repeat: check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeats = 2, 1

    import cogvid
    from diffusers import CogVideoXDPMScheduler
    from e2e_reference import reference_pipeline

    pipe = cogvid.load(args.model)
    spec = pipe.spec
    frames, height, width = args.frames or spec.default_frames, spec.default_height, spec.default_width
    reference = reference_pipeline(pipe, original_alphas=False, num_steps=args.steps)
    reference.scheduler = CogVideoXDPMScheduler.from_config(reference.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    max_length = pipe.engine.conditioner.embedders[0].max_length
    noise = torch.randn((1, spec.latent_frames(frames), spec.latent_channels, height // 8, width // 8),
                        generator=torch.Generator().manual_seed(0))

    def run_cogvid() -> None:
        pipe.generate(PROMPT, num_frames=frames, height=height, width=width, steps=args.steps, guidance=6.0,
                      latents=noise, seed=0)

    def run_diffusers() -> None:
        embeds, _ = reference.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=max_length)
        reference(
            prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), num_frames=frames,
            height=height, width=width, num_inference_steps=args.steps, guidance_scale=6.0, use_dynamic_cfg=True,
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
    print(f"{args.model} t2v, {frames} frames {width}x{height}, {args.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"{'pipeline':<10} {'median s':>9} {'runs':>30}")
    for name in times:
        print(f"{name:<10} {statistics.median(times[name]):>9.3f} {', '.join(f'{t:.2f}' for t in times[name]):>30}")
    print(f"ratio cogvid/diffusers: {ours / theirs:.2f} (goal <= 1.0)")


if __name__ == "__main__":
    main()
