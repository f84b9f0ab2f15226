"""``cogvid t2v`` and ``cogvid i2v``: one prompt (and image) in, MP4 + JSON sidecar out."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from cogvid.cli import console
from cogvid.cli import options as opt

T2V_EXAMPLES = """\
Examples:

  cogvid t2v "a red circle moving left"    # the embedded demo model
  cogvid t2v "a cat on a surfboard" -m cogvideox-5b --seed 42
  cogvid t2v "waves at dusk" -m cogvideox1.5-5b --frames 161 --size 768x1360
  cogvid t2v "a red ball" --sampler ddim --steps 30 --json
  cogvid t2v "a cat in ink style" -m cogvideox-5b --lora ckpts/ink-lora-09-09-21-10:0.8
"""

I2V_EXAMPLES = """\
Examples:

  cogvid i2v photo.png "the dog turns its head" -m cogvideox-5b-i2v
  cogvid i2v photo.jpg "clouds drift by" -m cogvideox1.5-5b-i2v --frames 81
"""


def run_generation(
    *,
    prompt: str,
    image: Optional[Path],
    model: Optional[str],
    weights: Optional[Path],
    config: list[Path],
    overrides: list[str],
    steps: Optional[int],
    guidance: Optional[float],
    sampler: Optional[str],
    seed: Optional[int],
    negative: str,
    frames: Optional[int],
    size: Optional[str],
    fps: Optional[int],
    num_videos: int,
    device: str,
    dtype: Optional[str],
    out: Path,
    as_json: bool,
    offload: bool,
    original_frames: bool,
    vae_tiling: bool = False,
    lora: Sequence[str] = (),
) -> None:
    """Load the model once, generate ``num_videos`` videos, write each atomically with its sidecar."""
    from cogvid.spec import parse_size

    height = width = None
    if size is not None:
        height, width = parse_size(size)
    if image is not None:
        from cogvid.image import load_image

        load_image(image)  # a missing or corrupt image fails before the model loads
    from cogvid.lora import parse_specs
    from cogvid.pipeline import load, resolve_model, validate_request

    lora_specs = parse_specs(lora)  # a bad --lora value or a missing folder fails before anything loads
    resolved = resolve_model(model, weights, config, overrides)
    validate_request(resolved.spec, resolved.name, image, frames, height, width)  # before any heavy work
    if sampler is not None:
        from cogvid.diffusion import sampler_config_with

        sampler_config_with(sampler, resolved.cfg.model.sampler_config)
    renderer = console.ProgressRenderer()
    pipe = load(device=device, dtype=dtype, lora=lora_specs, progress=renderer, resolved=resolved)
    pipe.engine.offload = offload
    schedule = pipe.spec.decode_schedule(original_frames)
    first_seed = random.randrange(2**31) if seed is None else seed
    if seed is None:
        console.err.print(f"seed: {first_seed}")
    for index in range(num_videos):
        prefix = f"[{index + 1}/{num_videos}] " if num_videos > 1 else ""
        renderer.prefix = prefix
        video = pipe.generate(
            prompt,
            image=image,
            negative_prompt=negative,
            num_frames=frames,
            height=height,
            width=width,
            steps=steps,
            guidance=guidance,
            sampler=sampler,
            seed=first_seed + index,
            callback=renderer,
            decode_schedule=schedule,
            vae_tiling=vae_tiling,
        )
        path = _write(video, out, prompt, fps, renderer)
        _report(path, video, as_json)


def _write(video: Any, out: Path, prompt: str, fps: Optional[int], renderer: console.ProgressRenderer) -> Path:
    """Reserve a fresh name, write the MP4 and the sidecar; nothing is left behind on failure."""
    import time

    from cogvid.outputs import publish
    from cogvid.pipeline import ProgressEvent

    started = time.perf_counter()
    renderer(ProgressEvent("stage", "writing"))
    written = publish(video, out, prompt, fps=fps)  # a fresh name; MP4 + sidecar as a unit
    renderer(ProgressEvent("stage_done", "writing", seconds=time.perf_counter() - started))
    return written


def _report(path: Path, video: Any, as_json: bool) -> None:
    from cogvid.video import sidecar_path

    if as_json:
        console.print_json({"path": str(path), "sidecar": str(sidecar_path(path)), **video.metadata, "fps": video.fps})
    else:
        console.out.print(str(path))
        meta = video.metadata
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in meta["timings"].items())
        console.err.print(
            f"{meta['frames']} frames {meta['width']}x{meta['height']} @ {video.fps} fps · seed {meta['seed']} · "
            f"{meta['sampler']} {meta['steps']} steps · {timings}"
        )


def t2v(
    prompt: str = typer.Argument(..., help="What the video shows."),
    model: Optional[str] = opt.Model,
    weights: Optional[Path] = opt.Weights,
    config: list[Path] = opt.Config,
    overrides: list[str] = opt.Set,
    steps: Optional[int] = opt.Steps,
    guidance: Optional[float] = opt.Guidance,
    sampler: Optional[str] = opt.Sampler,
    seed: Optional[int] = opt.Seed,
    negative: str = opt.Negative,
    frames: Optional[int] = opt.Frames,
    size: Optional[str] = opt.Size,
    fps: Optional[int] = opt.Fps,
    num_videos: int = opt.NumVideos,
    device: str = opt.Device,
    dtype: Optional[str] = opt.Dtype,
    out: Path = opt.Out,
    as_json: bool = opt.Json,
    offload: bool = opt.Offload,
    original_frames: bool = opt.OriginalFrames,
    vae_tiling: bool = opt.VaeTiling,
    lora: list[str] = opt.Lora,
) -> None:
    """Text to video: write outputs/<date>/<n>-<prompt>-s<seed>.mp4 and a .json sidecar.

    Without --model it runs the embedded demo model (no download).
    """
    run_generation(**locals(), image=None)


def i2v(
    image: Path = typer.Argument(..., help="The first frame: a PNG, JPEG or WebP image."),
    prompt: str = typer.Argument(..., help="What happens in the video."),
    model: Optional[str] = opt.Model,
    weights: Optional[Path] = opt.Weights,
    config: list[Path] = opt.Config,
    overrides: list[str] = opt.Set,
    steps: Optional[int] = opt.Steps,
    guidance: Optional[float] = opt.Guidance,
    sampler: Optional[str] = opt.Sampler,
    seed: Optional[int] = opt.Seed,
    negative: str = opt.Negative,
    frames: Optional[int] = opt.Frames,
    size: Optional[str] = opt.Size,
    fps: Optional[int] = opt.Fps,
    num_videos: int = opt.NumVideos,
    device: str = opt.Device,
    dtype: Optional[str] = opt.Dtype,
    out: Path = opt.Out,
    as_json: bool = opt.Json,
    offload: bool = opt.Offload,
    original_frames: bool = opt.OriginalFrames,
    vae_tiling: bool = opt.VaeTiling,
    lora: list[str] = opt.Lora,
) -> None:
    """Image to video with an -i2v model: the image is the first frame."""
    if model is None and not config:
        model = "cogvideox-5b-i2v"
    run_generation(**locals())
