"""``cogvid batch FILE``: many prompts with one model load; resumable and shardable over torchrun ranks."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from cogvid.cli import console
from cogvid.cli import options as opt

EXAMPLES = """\
Examples:

  cogvid batch prompts.txt                     one prompt per line, # comments
  cogvid batch prompts.txt -m cogvideox-5b --resume
  cogvid batch images.txt -m cogvideox-5b-i2v  lines: the dog turns@@dog.png
  cogvid batch jobs.jsonl --json               {"prompt": "...", "seed": 7}
  torchrun --nproc_per_node 4 -m cogvid batch prompts.txt -m cogvideox-2b
"""

BaseSeed = typer.Option(
    None,
    "--seed",
    min=0,
    help="Base seed: a line without its own seed uses SEED + its line index (default 0, so reruns repeat).",
)
Resume = typer.Option(
    False, "--resume", help="Skip videos already complete in --out (same prompt, image, seed and settings)."
)

STATUS_STYLES = {"done": "green", "skipped": "cyan", "failed": "red", "invalid": "red"}


class BatchProgress:
    """Renders a batch: an outer bar over its videos and an inner one over the current video's
    stages, denoising steps and decode chunks (on a terminal); ``[i/n]`` stage lines otherwise."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total = total
        self.live = console.err.is_terminal and not quiet
        self.lines = console.ProgressRenderer(quiet=quiet or self.live)
        self._progress: Any = None
        self._prefix = ""
        self._step_started: float | None = None
        self._first_index = 0

    def start(self) -> None:
        """Show the bars (on a terminal)."""
        if not self.live or self._progress is not None:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console.err,
            transient=True,
            redirect_stdout=False,  # results stay on stdout
            redirect_stderr=False,
        )
        self._progress.start()
        self._outer = self._progress.add_task("batch", total=self.total, info="")
        self._inner = self._progress.add_task("", total=None, info="", visible=False)

    def video(self, position: int, line: int) -> None:
        """The ``position``-th video (1-based) of this run starts; it comes from prompt-file ``line``."""
        self._prefix = f"[{position}/{self.total}] "
        self.lines.prefix = self._prefix
        self._step_started = None
        if self._progress is not None:
            self._progress.update(self._outer, description=f"batch · line {line}")

    def advance(self) -> None:
        """The current video is finished (written, failed or skipped)."""
        if self._progress is not None:
            self._progress.advance(self._outer)
            self._progress.update(self._inner, visible=False)

    def __call__(self, event: Any) -> None:  # event: cogvid.pipeline.ProgressEvent
        self.lines(event)
        if self._progress is None:
            return
        label = console.ProgressRenderer.STAGE_LABELS.get(event.stage, event.stage)
        if event.kind == "stage":
            self._progress.reset(self._inner, total=None, description=f"{self._prefix}{label}", info="", visible=True)
            self._step_started = None
        elif event.kind == "stage_done" and event.stage == "loading":
            console.err.print(f"[green]✓[/] {label} ({event.seconds:.1f} s)")
        elif event.kind in ("step", "decode"):
            now = time.perf_counter()
            if self._step_started is None:
                self._step_started, self._first_index = now, event.index - 1
            rate = (now - self._step_started) / max(event.index - self._first_index, 1)
            unit = "s/step" if event.kind == "step" else "s/chunk"
            self._progress.update(self._inner, total=event.total, completed=event.index, info=f"{rate:.2f} {unit}")

    def result(self, path: Path) -> None:
        """A finished video's path on stdout (above the bars when stdout is the same terminal)."""
        if self._progress is not None and console.out.is_terminal:
            console.err.print(str(path), markup=False, highlight=False)
        else:
            console.out.print(str(path), markup=False, highlight=False)

    def close(self) -> None:
        self.lines.close()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_summary(results: list, seconds: float) -> None:
    """The rich summary table (line, prompt, status, output, seconds) and a totals line, on stderr."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="batch summary", title_justify="left", show_lines=False, expand=False)
    table.add_column("line", justify="right")
    table.add_column("prompt", max_width=40, overflow="ellipsis", no_wrap=True)
    table.add_column("status")
    table.add_column("output", overflow="fold")
    table.add_column("seconds", justify="right")
    for result in sorted(results, key=lambda r: (r.line, r.video_index)):
        style = STATUS_STYLES.get(result.status, "")
        output = Text(result.path or result.note or "") if result.ok else Text(result.error or "", style="red")
        secs = f"{result.seconds:.1f}" if result.status in ("done", "failed") else ""
        table.add_row(str(result.line), Text(result.prompt), Text(result.status, style=style), output, secs)
    console.err.print(table)
    counts = {status: sum(r.status == status for r in results) for status in STATUS_STYLES}
    parts = [f"{n} {status}" for status, n in counts.items() if n]
    console.err.print(f"{', '.join(parts)} in {seconds:.1f} s")


def run_batch(
    *,
    file: Path,
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
    resume: bool,
    vae_tiling: bool = False,
    lora: Sequence[str] = (),
    wandb: Optional[str] = None,
    debug: bool = False,
) -> None:
    """Parse and validate every line, load the model once, generate this rank's share of the
    videos (skipping complete ones with ``resume``), then print the summary on rank 0.

    Raises GenerationError (exit 1) when any line failed; a failing line never stops the batch.
    """
    from cogvid.batch import (
        BatchClaims,
        JobDefaults,
        JobResult,
        claim_output_folder,
        completed_outputs,
        job_key,
        parse_prompt_file,
        validate_jobs,
    )
    from cogvid.distributed import can_gather, gather_objects, rank_device, rank_info, shard
    from cogvid.errors import Cancelled, CogvidError, GenerationError
    from cogvid.image import load_image
    from cogvid.pipeline import load, resolve_model, validate_request
    from cogvid.spec import parse_size

    started = time.perf_counter()
    rank, world_size, local_rank = rank_info()
    lead = rank == 0
    height = width = None
    if size is not None:
        height, width = parse_size(size)
    defaults = JobDefaults(negative, seed or 0, steps, guidance, frames, height, width, num_videos)
    jobs = parse_prompt_file(file, defaults)
    from cogvid.lora import parse_specs

    lora_specs = parse_specs(lora)  # a bad --lora value or a missing folder fails before anything loads
    if wandb:
        from cogvid.tracking import require_credentials

        require_credentials()
    resolved = resolve_model(model, weights, config, overrides)
    job_loras: dict[int, tuple] = {}  # job line -> its LoRA specs (a JSONL "lora" field, else --lora)
    for position, job in enumerate(jobs):
        if job.ok:
            try:
                job_loras[job.line] = parse_specs(job.lora) if job.lora is not None else lora_specs
            except CogvidError as e:
                jobs[position] = job.failed(e)

    schedule = resolved.spec.decode_schedule(original_frames)

    def model_key(job: Any) -> str:
        # LoRAs, a non-default decode schedule and tiled decoding change pixels: part of each resume key.
        specs = job_loras[job.line]
        key = resolved.name + "".join(f"+lora:{spec.path.resolve()}:{spec.scale}" for spec in specs)
        if schedule is not None:
            key += f"+decode:{schedule}"
        return key + ("+vae-tiling" if vae_tiling else "")
    if sampler is not None:
        from cogvid.diffusion import sampler_config_with

        sampler_config_with(sampler, resolved.cfg.model.sampler_config)
    jobs = validate_jobs(  # every line, before the model loads
        jobs,
        lambda job: validate_request(resolved.spec, resolved.name, job.image, job.frames, job.height, job.width),
        check_image=load_image,
    )
    mine = shard(jobs, rank, world_size)
    gathered = world_size > 1 and can_gather()
    if world_size == 1 or gathered:
        announced = jobs if lead else []
    else:
        announced = mine  # no summary on rank 0: every rank reports its own lines
    for job in announced:
        if not job.ok:
            console.print_error(f"line {job.line}: {job.error}", job.hint)

    results = [JobResult(job.line, job.prompt, "invalid", error=job.error, rank=rank) for job in mine if not job.ok]
    units = [(job, k, job_key(job, k, model_key(job), sampler)) for job in mine if job.ok for k in range(job.num_videos)]
    progress: BatchProgress | None = None
    try:
        # (outputs) stale leftovers go first; claims let batches sharing `out` split the videos
        with claim_output_folder(out) as removed, BatchClaims(out, resume=resume) as claims:
            if removed:
                console.warn(f"removed {len(removed)} partial file(s) left by an interrupted run")
            done = completed_outputs(out) if resume else {}
            pending = []
            for job, k, key in units:
                if key in done:
                    path = str(done[key])
                    results.append(JobResult(job.line, job.prompt, "skipped", path=path, video_index=k, rank=rank))
                else:
                    pending.append((job, k, key))
            if resume and len(pending) < len(units):
                who = f"rank {rank}: " if world_size > 1 else ""
                complete = len(units) - len(pending)
                console.err.print(f"{who}resume: {complete} video(s) already complete, {len(pending)} to make")
            if pending:
                progress = BatchProgress(len(pending), quiet=not lead)
                progress.start()
                run_device = rank_device(device, local_rank, world_size)
                # One model load per LoRA combination (LoRAs are merged into the weights at load time).
                groups: dict[tuple, list] = {}
                for unit in pending:
                    groups.setdefault(job_loras[unit[0].line], []).append(unit)
                tracker = None
                if wandb:
                    from cogvid.tracking import WandbLogger

                    run_config = {"model": resolved.name, "file": str(file), "sampler": sampler, "loras": list(lora)}
                    group = f"batch-{file.stem}" if world_size > 1 else None
                    tracker = WandbLogger(wandb, run_config, group=group, name=f"{file.stem}-rank{rank}" if group else None)
                settings = _Settings(file, out, fps, sampler, schedule, vae_tiling, as_json, debug, rank, tracker, claims)
                try:
                    position = 1
                    for specs, units_of_group in groups.items():
                        pipe = None  # free the previous model before loading the next
                        pipe = load(device=run_device, dtype=dtype, lora=specs, progress=progress, resolved=resolved)
                        pipe.engine.offload = offload
                        _generate(pipe, units_of_group, settings, progress, results, start=position)
                        position += len(units_of_group)
                finally:
                    if tracker is not None:
                        tracker.finish()
    except (KeyboardInterrupt, Cancelled):
        if progress is not None:
            progress.close()
        if world_size == 1:
            print_summary(results, time.perf_counter() - started)
        raise Cancelled("interrupted", hint="run the same command with --resume to make only what is missing") from None
    finally:
        if progress is not None:
            progress.close()

    everyone = gather_objects(results) if gathered else None
    merged = [r for part in everyone for r in part] if everyone is not None else results
    if lead or everyone is None:
        print_summary(merged, time.perf_counter() - started)
    failed = [r for r in merged if not r.ok]
    if failed:
        if not lead and everyone is not None:
            raise typer.Exit(1)  # rank 0 says why
        lines = sorted({r.line for r in failed})
        shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
        total = len({r.line for r in merged})
        raise GenerationError(
            f"{len(lines)} of {total} prompt line(s) failed: line{'s' if len(lines) > 1 else ''} {shown}",
            hint="fix those lines, then rerun with --resume to make only what is missing",
        )


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Hold Ctrl-C back until the block ends (main thread only), then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


@dataclass(frozen=True)
class _Settings:
    """What every video of a batch shares, besides the loaded pipeline."""

    file: Path
    out: Path
    fps: Optional[int]
    sampler: Optional[str]
    decode_schedule: Optional[str]
    vae_tiling: bool
    as_json: bool
    debug: bool
    rank: int
    tracker: Any = None
    claims: Any = None  # cogvid.claims.BatchClaims: one batch makes each video


def _generate(
    pipe: Any, pending: list, settings: _Settings, progress: BatchProgress, results: list, start: int = 1
) -> None:
    """Make every pending (job, video index, key), appending to ``results`` as each one ends.

    A failure is reported with its line number and the batch goes on; Ctrl-C stops it (the
    writers leave no partial file, and ``results`` holds what finished).
    """
    from cogvid.batch import SIDECAR_KEY, JobResult
    from cogvid.cli.generate import _write
    from cogvid.errors import Cancelled, CogvidError
    from cogvid.video import sidecar_path

    for position, (job, k, key) in enumerate(pending, start=start):
        progress.video(position, job.line)
        started = time.perf_counter()
        try:
            # (outputs) claim the video, and see whether another batch made it meanwhile
            claim = settings.claims.take(key) if settings.claims is not None else None
            if claim is not None and not claim.mine:
                console.err.print(f"line {job.line}: skipped, {claim.reason}" + (f": {claim.path}" if claim.path else ""), markup=False)
                path = str(claim.path) if claim.path else None
                results.append(JobResult(job.line, job.prompt, "skipped", path, video_index=k, rank=settings.rank, note=claim.reason))
                progress.advance()
                continue
            video = pipe.generate(
                job.prompt,
                image=job.image,
                negative_prompt=job.negative,
                num_frames=job.frames,
                height=job.height,
                width=job.width,
                steps=job.steps,
                guidance=job.guidance,
                sampler=settings.sampler,
                seed=job.seed + k,
                callback=progress,
                decode_schedule=settings.decode_schedule,
                vae_tiling=settings.vae_tiling,
            )
            video.metadata.update({SIDECAR_KEY: key, "batch_file": str(settings.file), "batch_line": job.line})
            with _defer_sigint():  # a finished video is saved whole, sidecar included, and counted
                path = _write(video, settings.out, job.prompt, settings.fps, progress)
                seconds = time.perf_counter() - started
                results.append(
                    JobResult(job.line, job.prompt, "done", str(path), seconds, video_index=k, rank=settings.rank)
                )
                if settings.tracker is not None:
                    settings.tracker.log_video(path, video.metadata, seconds)
                if settings.as_json:
                    fps = settings.fps or video.fps
                    record = {"path": str(path), "sidecar": str(sidecar_path(path)), **video.metadata, "fps": fps}
                    console.print_json(record)
                else:
                    progress.result(path)
        except Cancelled:
            raise
        except Exception as e:  # one bad job is reported and the batch goes on
            if settings.debug:
                traceback.print_exc()
            message = e.message if isinstance(e, CogvidError) else f"{type(e).__name__}: {e}"
            console.print_error(f"line {job.line}: {message}", getattr(e, "hint", None))
            seconds = time.perf_counter() - started
            results.append(
                JobResult(job.line, job.prompt, "failed", None, seconds, message, video_index=k, rank=settings.rank)
            )
        progress.advance()


def batch(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ..., help="Prompt file: one prompt per line (prompt@@image for I2V), or .jsonl with per-line settings."
    ),
    model: Optional[str] = opt.Model,
    weights: Optional[Path] = opt.Weights,
    config: list[Path] = opt.Config,
    overrides: list[str] = opt.Set,
    steps: Optional[int] = opt.Steps,
    guidance: Optional[float] = opt.Guidance,
    sampler: Optional[str] = opt.Sampler,
    seed: Optional[int] = BaseSeed,
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
    vae_tiling: bool = opt.VaeTiling,
    original_frames: bool = opt.OriginalFrames,
    resume: bool = Resume,
    lora: list[str] = opt.Lora,
    wandb: Optional[str] = typer.Option(
        None, "--wandb", metavar="PROJECT",
        help="Log each video and its settings to this Weights & Biases project (WANDB_MODE=offline logs locally).",
    ),
) -> None:
    """Generate a video for every line of FILE, loading the model once.

    Bad lines are reported before the model loads, with their numbers; the rest still run (exit 1 if any failed).

    Under torchrun, the i-th prompt runs on rank i % WORLD_SIZE; rank 0 prints the summary.
    """
    root = ctx.find_root()
    debug = bool(isinstance(root.obj, dict) and root.obj.get("debug"))
    params = {name: value for name, value in locals().items() if name not in ("ctx", "root")}
    run_batch(**params)


def register(app: typer.Typer) -> None:
    """Add ``cogvid batch`` to the root app."""
    app.command("batch", epilog=EXAMPLES)(batch)
