"""``cogvid t2v`` and ``cogvid i2v``: one prompt (and image) in, MP4 + JSON sidecar out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cogvid.cli import console
from cogvid.cli.options import DRY_RUN, FROM, MODEL_OPTIONS, NUM_VIDEOS, OUTPUT_OPTIONS, VIDEO_OPTIONS, CliOptions, with_options
from cogvid.request import GenerationRequest

T2V_EXAMPLES = """\
Examples:

  cogvid t2v "a red circle moving left"    # the embedded demo model
  cogvid t2v "a cat on a surfboard" -m cogvideox-5b --seed 42
  cogvid t2v "waves at dusk" -m cogvideox1.5-5b --frames 161 --size 768x1360
  cogvid t2v "a red ball" --sampler ddim --steps 30 --json
  cogvid t2v --from outputs/2026-12-02/0003-a-red-ball-s42.json --steps 30   # the same video, 30 steps
  cogvid t2v "a cat in ink style" -m cogvideox-5b --lora ckpts/ink-lora-09-09-21-10:0.8
"""

I2V_EXAMPLES = """\
Examples:

  cogvid i2v photo.png "the dog turns its head" -m cogvideox-5b-i2v
  cogvid i2v photo.jpg "clouds drift by" -m cogvideox1.5-5b-i2v --frames 81
"""

GENERATION_OPTIONS = (FROM, MODEL_OPTIONS, VIDEO_OPTIONS, NUM_VIDEOS, OUTPUT_OPTIONS, DRY_RUN)


def run_videos(request: GenerationRequest, options: CliOptions) -> None:
    """Check ``request`` (nothing loads before that), load its model once, make and write its videos."""
    from cogvid.prepare import prepare
    from cogvid.outputs import check_output_folder

    prepared = prepare(request)
    if options.dry_run:
        show_dry_run([prepared], options.as_json)
        return
    check_output_folder(options.out)
    from cogvid.parallel import my_share
    from cogvid.pipeline import load, settle_memory

    (prepared,), note = settle_memory([prepared])
    share = my_share(prepared)  # under torchrun: this process's videos, and whether it writes them
    if note and share.lead:
        console.err.print(note, markup=False)
    renderer = console.ProgressRenderer(quiet=not share.lead)
    pipe = load(resolved=prepared.model, progress=renderer, text_encoder=share.encodes_text)
    if request.seed is None and share.lead:
        console.err.print(f"seed: {prepared.request.seed}")
    videos = share.videos
    try:
        for index, video_request in enumerate(videos):
            renderer.prefix = f"[{index + 1}/{len(videos)}] " if len(videos) > 1 else ""
            video = pipe.run(video_request, callback=renderer)
            if share.writes:
                report(write(video, options.out, renderer), video, options.as_json)
    finally:
        renderer.close()


def write(video: Any, out: Path, renderer: Any) -> Path:
    """Write a finished video under a fresh name in ``out`` (stage lines around it)."""
    import time

    from cogvid.pipeline import ProgressEvent

    started = time.perf_counter()
    renderer(ProgressEvent("stage", "writing"))
    path = video.save_new(out)
    renderer(ProgressEvent("stage_done", "writing", seconds=time.perf_counter() - started))
    return path


def report(path: Path, video: Any, as_json: bool) -> None:
    """The result line on stdout (a JSON record with --json) and a summary line on stderr."""
    from cogvid.video import sidecar_path

    meta = video.metadata
    if as_json:
        console.print_json({"path": str(path), "sidecar": str(sidecar_path(path)), **meta, "fps": video.fps})
        return
    console.out.print(str(path), markup=False, highlight=False)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in meta["timings"].items())
    console.err.print(
        f"{meta['frames']} frames {meta['width']}x{meta['height']} @ {video.fps} fps · seed {meta['seed']} · "
        f"{meta['sampler']} {meta['steps']} steps · {timings}",
        markup=False,
    )


def show_dry_run(prepared: list[Any], as_json: bool) -> None:
    """What would run: each prepared request, its model and whether the weights are there; nothing loads."""
    for item in prepared:
        record, request = item.describe(), item.request
        if as_json:
            console.print_json(record)
            continue
        console.out.print(
            f"{record['model']}: {request.prompt!r}\n  {request.frames} frames {item.width}x{item.height} @ {request.fps} fps"
            f" · seed {request.seed} · {item.sampler.name} {item.sampler.steps} steps · guidance {item.sampler.guidance}"
            f" · {request.num_videos} video(s)",
            markup=False, highlight=False,
        )
        if record["speed"]:
            console.out.print(f"  speed: {record['speed']}", markup=False, highlight=False)
        for part in record["weights"]:
            console.out.print(f"  {part['part']:<12} {'found' if part['found'] else 'missing'}  {part['path']}", markup=False)
        console.out.print(f"  memory: {record['memory']['summary']}", markup=False, highlight=False)


@with_options(*GENERATION_OPTIONS)
def t2v(prompt: Optional[str] = typer.Argument(None, help="What the video shows."), *, options: CliOptions) -> None:
    """Text to video: write outputs/<date>/<n>-<prompt>-s<seed>.mp4 and a .json sidecar.

    Without --model it runs the embedded demo model (no download).
    """
    _require(prompt, options, 'give a PROMPT, e.g. cogvid t2v "a red circle moving left"')
    run_videos(options.request(prompt=prompt), options)


@with_options(*GENERATION_OPTIONS)
def i2v(
    image: Optional[Path] = typer.Argument(None, help="The first frame: a PNG, JPEG or WebP image."),
    prompt: Optional[str] = typer.Argument(None, help="What happens in the video."),
    *,
    options: CliOptions,
) -> None:
    """Image to video with an -i2v model: the image is the first frame."""
    _require(prompt, options, 'give IMAGE and PROMPT, e.g. cogvid i2v photo.png "the dog turns its head"')
    request = options.request(prompt=prompt, image=image)
    if request.model.name is None and not request.model.configs:
        request = request.replace(model=request.model.replace(name="cogvideox-5b-i2v"))
    run_videos(request, options)


def _require(prompt: Optional[str], options: CliOptions, hint: str) -> None:
    from cogvid.errors import UsageError

    if prompt is None and options.from_sidecar is None:
        raise UsageError("missing argument PROMPT", hint=f"{hint}, or --from SIDECAR.json")
