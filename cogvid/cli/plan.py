"""``cogvid plan``: the GPU memory each stage of a video needs, estimated before anything loads."""

from __future__ import annotations

from cogvid.cli import console
from cogvid.cli.options import MODEL_OPTIONS, OUTPUT_OPTIONS, VIDEO_OPTIONS, CliOptions, with_options

EXAMPLES = """\
Examples:

  cogvid plan -m cogvideox-5b                                 # every offload mode, default size
  cogvid plan -m cogvideox1.5-5b --frames 161 --memory 24GB   # what --memory would pick on 24 GB
"""
_VIDEO = tuple(o for o in VIDEO_OPTIONS if o.name in ("frames", "size", "vae_tiling", "original_frames", "negative"))


@with_options(MODEL_OPTIONS, _VIDEO, OUTPUT_OPTIONS[1])
def plan(*, options: CliOptions) -> None:
    """Estimate the peak GPU memory of each stage (T5, denoising, VAE decode) and the host RAM of the load.

    Without --offload it shows every mode; loads nothing.
    """
    from cogvid.memory_plan import plan_report

    request = options.request()
    quantize = request.model.quantize  # int8wo, int8dq, fp8wo, fp8dq: the DiT's linear weights at one byte
    report = plan_report(request, quantize=quantize[:4] if quantize else None)
    if options.as_json:
        console.print_json(report["json"])
        return
    for line in report["lines"]:
        console.out.print(line, markup=False, highlight=False)
