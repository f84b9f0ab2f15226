"""``cogvid cache calibrate``: fit TeaCache's polynomial for a model, stored beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cogvid.cli import console
from cogvid.cli.options import MODEL_OPTIONS, CliOptions, with_options

app = typer.Typer(help="Step caches (--cache): calibrate TeaCache for a model.", no_args_is_help=True)


@app.command("calibrate")
@with_options(MODEL_OPTIONS)
def calibrate(
    prompts: Optional[Path] = typer.Option(None, "--prompts", metavar="FILE", help="One prompt per line, prompt@@image for -i2v models (default: 4 simple scenes)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps of each run (default: the model's)."),
    *,
    options: CliOptions,
) -> None:
    """Fit TeaCache's polynomial from one uncached run per prompt; writes teacache.json beside the model's weights."""
    from cogvid.batch import read_lines
    from cogvid.pipeline import load
    from cogvid.prepare import resolve_model
    from cogvid.speed.calibrate import DEFAULT_PROMPTS, calibrate as fit

    texts = [t.strip() for t in read_lines(prompts) if t.strip() and not t.strip().startswith("#")] if prompts else list(DEFAULT_PROMPTS)
    renderer = console.ProgressRenderer()
    try:
        pipe = load(resolved=resolve_model(options.request().model), progress=renderer)
        path, record = fit(pipe, texts, steps, progress=lambda done, total: console.err.print(f"run {done}/{total} recorded"))
    finally:
        renderer.close()
    console.out.print(str(path), markup=False, highlight=False)
    console.err.print(f"fitted to {record['points']} steps of {record['prompts']} runs (rms error {record['rms_error']:.3g})", markup=False)
