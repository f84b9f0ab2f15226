"""Option definitions shared by the generation commands (t2v, i2v, batch, repl)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _complete_model(incomplete: str) -> list[str]:
    from cogvid.registry import load_registry

    return [name for name in load_registry() if name.startswith(incomplete)]


def _complete_sampler(incomplete: str) -> list[str]:
    from cogvid.diffusion import SAMPLER_NAMES

    return [name for name in SAMPLER_NAMES if name.startswith(incomplete)]


Model = typer.Option(None, "--model", "-m", help="Model name (see `cogvid models list`).", autocompletion=_complete_model)
Weights = typer.Option(None, "--weights", metavar="DIR", help="Weights root (default: $COGVID_WEIGHTS or ~/.cache/cogvid/models).")
Config = typer.Option([], "--config", metavar="FILE", help="Extra YAML merged over the model's own (repeatable).")
Set = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a dotted config key, e.g. args.sampling_fps=16 (repeatable).")
Steps = typer.Option(None, "--steps", min=1, help="Denoising steps (default: the model's, 50).")
Guidance = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale (default: the model's, 6).")
Sampler = typer.Option(None, "--sampler", help="Sampler short name, e.g. vpsde-dpmpp2m (default), ddim, dpmpp2m.", autocompletion=_complete_sampler)
Seed = typer.Option(None, "--seed", help="Random seed (default: a random one, printed and saved in the sidecar).")
Negative = typer.Option("", "--negative", help="Negative prompt (default: none, the original's zero unconditional input).")
Frames = typer.Option(None, "--frames", help="Number of frames (1.0 models: 8k+1 up to 49; 1.5: 16k+1 up to 161).")
Size = typer.Option(None, "--size", metavar="HxW", help="Video size, height x width, e.g. 768x1360.")
Fps = typer.Option(None, "--fps", min=1, help="Frames per second of the written video (default: the model's).")
NumVideos = typer.Option(1, "--num-videos", "-n", min=1, help="Videos per prompt (seeds seed, seed+1, ...).")
Lora = typer.Option([], "--lora", metavar="PATH[:SCALE]", help="SAT LoRA checkpoint folder, with an optional scale (repeatable).")
Device = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")
Dtype = typer.Option(None, "--dtype", help="fp32, fp16 or bf16 (default: the model's on GPU, fp32 on CPU).")
Out = typer.Option(Path("outputs"), "--out", "-o", metavar="DIR", help="Output folder (videos go to DIR/<date>/).")
Json = typer.Option(False, "--json", help="Print one JSON result per video on stdout.")
Offload = typer.Option(False, "--offload", help="Keep only the part in use on the GPU (T5, DiT, VAE in turn): less memory, a little slower.")
VaeTiling = typer.Option(
    False,
    "--vae-tiling",
    help="Decode the video in overlapping spatial tiles: less memory at large sizes, slightly different pixels.",
)
OriginalFrames = typer.Option(
    True,
    "--original-frames/--diffusers-frames",
    help="1.5 models: decode as the original SAT code (81 requested frames -> 84) or as diffusers (81).",
)

OptionalPath = Optional[Path]
