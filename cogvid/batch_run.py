"""Planning and running a batch: every line checked before the model loads, one load per LoRA set,
this rank's share of the videos, resume, and a result per video.

The CLI renders what happens through a :class:`BatchObserver`; everything it decides with lives here,
so ``cogvid batch``, the Python API and tests share it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cogvid.batch import SIDECAR_KEY, BatchClaims, Job, claim_output_folder, completed_outputs, job_key, model_key, parse_prompt_file
from cogvid.distributed import can_gather, gather_objects, rank_device, rank_info, shard
from cogvid.errors import Cancelled, CheckpointError, CogvidError, GenerationError, UsageError
from cogvid.layout import check_lora_folders
from cogvid.parallel import SPLIT_MODES
from cogvid.prepare import PreparedRequest, ResolvedModel, prepare, resolve_model
from cogvid.request import GenerationRequest, LoraSpec


@dataclass(frozen=True)
class JobResult:
    """What became of one video of a job (or of an invalid line): for the summary and the exit code."""

    line: int
    prompt: str
    status: str  # "done", "skipped" (already complete, --resume), "failed", "invalid"
    path: str | None = None
    seconds: float = 0.0
    error: str | None = None
    video_index: int = 0
    rank: int = 0
    note: str | None = None  # why a video was skipped when it has no path ("another batch is making it")

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


@dataclass(frozen=True)
class Unit:
    """One video to make: its job, its index among the job's videos, its resume key and its request."""

    job: Job
    video_index: int
    key: str
    prepared: PreparedRequest

    @property
    def loras(self) -> tuple[LoraSpec, ...]:
        return self.prepared.request.model.loras


@dataclass
class BatchPlan:
    """Every line of a prompt file checked against the model, and this rank's videos."""

    file: Path
    model: ResolvedModel
    jobs: list[Job]  # every line, in file order (bad ones with their error)
    units: list[Unit]  # this rank's videos
    invalid: list[Job]  # this rank's bad lines
    rank: int = 0
    world_size: int = 1
    gathered: bool = True  # results can be gathered on rank 0 (a summary of the whole batch there)
    split: bool = False  # --parallel cfg/sequence: every rank takes part in every video, rank 0 writes

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def invalid_results(self) -> list[JobResult]:
        """A result for every bad line of the file (what a dry run reports)."""
        return [JobResult(job.line, job.prompt, "invalid", error=job.error) for job in self.jobs if not job.ok]

    def announced(self) -> list[Job]:
        """The bad lines this process reports (rank 0 all of them when results are gathered)."""
        if self.world_size == 1 or self.gathered:
            return [job for job in self.jobs if not job.ok] if self.lead else []
        return self.invalid


def plan_batch(file: str | Path, template: GenerationRequest, model: ResolvedModel | None = None) -> BatchPlan:
    """Read ``file`` with ``template``'s settings, prepare every line for the model (nothing loads),
    and pick this rank's share (line i goes to rank i % world size; every line with a split
    ``--parallel`` mode, where the ranks make each video together)."""
    rank, world_size, _ = rank_info()
    model = model or resolve_model(template.model)
    check_lora_folders(spec.path for spec in template.model.loras)  # the command line's: every line would fail
    jobs = parse_prompt_file(file, template)
    checked: list[Job] = []
    prepared: dict[int, PreparedRequest] = {}
    for job in jobs:
        if job.ok:
            try:
                prepared[job.line] = prepare(job.request, model, batch=True)
            except CogvidError as e:
                job = job.failed(e)
        checked.append(job)
    split = world_size > 1 and template.model.parallel in SPLIT_MODES
    mine = checked if split else shard(checked, rank, world_size)
    units = []
    for job in mine:
        if not job.ok:
            continue
        schedule = prepared[job.line].decode_schedule
        key_model = model_key(job.request, model.name, schedule)
        for k, video in enumerate(prepared[job.line].videos()):
            units.append(Unit(job, k, job_key(job.request, k, key_model), video))
    invalid = [job for job in mine if not job.ok]
    gathered = world_size > 1 and can_gather()
    return BatchPlan(Path(file), model, checked, units, invalid, rank, world_size, gathered or world_size == 1, split)


class BatchObserver(Protocol):
    """What a batch reports while it runs (the CLI draws bars and lines from it)."""

    def notice(self, text: str) -> None: ...
    def start(self, total: int) -> None: ...
    def video(self, position: int, unit: Unit) -> None: ...
    def progress(self, event: Any) -> None: ...
    def written(self, path: Path, video: Any, unit: Unit) -> None: ...
    def skipped(self, unit: Unit, reason: str, path: str | None) -> None: ...
    def failed(self, unit: Unit, error: BaseException) -> None: ...
    def advance(self) -> None: ...


@dataclass
class BatchRun:
    """How a plan runs: where videos go, on which device, resumed or not, and what watches it."""

    out: Path
    observer: BatchObserver
    resume: bool = False
    fps: int | None = None
    debug: bool = False
    wandb: str | None = None  # a Weights & Biases project to log each video to
    write_guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    results: list[JobResult] = field(default_factory=list)
    tracker: Any = None  # the WandbLogger, while the batch runs
    claims: Any = None  # the BatchClaims, while the batch runs: one batch makes each video


def run_plan(plan: BatchPlan, run: BatchRun) -> list[JobResult]:
    """Make this rank's videos of ``plan`` (skipping complete ones with ``run.resume``); returns every
    result, the invalid lines' included. A failing video is reported and the batch goes on; Ctrl-C
    (KeyboardInterrupt or Cancelled) stops it, with ``run.results`` holding what finished."""
    if run.wandb:
        from cogvid.tracking import require_credentials

        require_credentials()  # before anything loads
    results = run.results
    results.extend(JobResult(job.line, job.prompt, "invalid", error=job.error, rank=plan.rank) for job in plan.invalid)
    if not plan.units:
        return results  # nothing to make here: the output folder is not touched
    # Stale leftovers go first; claims let batches sharing the folder split its videos. In a split
    # (--parallel cfg/sequence) the ranks are one batch: the lead cleans and claims for all of them.
    follower = plan.split and not plan.lead
    with (contextlib.nullcontext([]) if follower else claim_output_folder(run.out)) as removed, \
            (contextlib.nullcontext() if follower else BatchClaims(run.out, resume=run.resume)) as claims:
        run.claims = claims
        if removed:
            run.observer.notice(f"removed {len(removed)} partial file(s) left by an interrupted run")
        done = completed_outputs(run.out) if run.resume else {}
        pending = []
        for unit in plan.units:
            if unit.key in done:
                path = str(done[unit.key])
                results.append(JobResult(unit.job.line, unit.job.prompt, "skipped", path=path, video_index=unit.video_index, rank=plan.rank))
            else:
                pending.append(unit)
        if plan.split and plan.gathered:  # the ranks make the lead's list of videos together
            lead_keys = set(gather_objects([unit.key for unit in pending])[0])
            pending = [unit for unit in plan.units if unit.key in lead_keys]
        if run.resume and len(pending) < len(plan.units):
            who = f"rank {plan.rank}: " if plan.world_size > 1 else ""
            complete = len(plan.units) - len(pending)
            run.observer.notice(f"{who}resume: {complete} video(s) already complete, {len(pending)} to make")
        if not pending:
            return results
        if run.wandb:
            from cogvid.tracking import WandbLogger

            name = plan.file.stem
            group = f"batch-{name}" if plan.world_size > 1 else None
            config = {"model": plan.model.name, "file": str(plan.file), "loras": [s.to_json() for s in plan.model.choice.loras]}
            run.tracker = WandbLogger(run.wandb, config, group=group, name=f"{name}-rank{plan.rank}" if group else None)
        try:
            _make_all(plan, run, pending)
        finally:
            if run.tracker is not None:
                run.tracker.finish()
    return results


def _make_all(plan: BatchPlan, run: BatchRun, pending: list[Unit]) -> None:
    """Load the model once per LoRA combination and make its videos."""
    run.observer.start(len(pending))
    _, world_size, local_rank = rank_info()
    groups: dict[tuple[LoraSpec, ...], list[Unit]] = {}
    for unit in pending:  # one model load per LoRA combination (they are merged at load time)
        groups.setdefault(unit.loras, []).append(unit)
    position = 1
    for loras, units in groups.items():
        from cogvid.pipeline import load

        pipe = None  # the previous model is freed before the next one loads
        choice = plan.model.choice.replace(loras=loras, device=rank_device(plan.model.choice.device, local_rank, world_size))
        if choice.offload is None:  # --memory picks the offload mode that fits this group's largest video
            from cogvid.pipeline import settle_memory

            settled, note = settle_memory([dataclasses.replace(u.prepared, request=u.prepared.request.replace(model=choice)) for u in units])
            choice = choice.replace(offload=settled[0].request.model.offload)
            if note:
                run.observer.notice(note)
        try:
            pipe = load(resolved=dataclasses.replace(plan.model, choice=choice), progress=run.observer.progress,
                        text_encoder=plan.lead or not plan.split)  # in a split, rank 0 encodes for everyone
        except (CheckpointError, UsageError) as e:  # e.g. a line's LoRA that does not fit: its lines fail
            for unit in units:
                run.observer.video(position, unit)
                _failed(unit, e, 0.0, plan, run)
                position += 1
            continue
        for unit in units:
            _make(pipe, unit, position, plan, run)
            position += 1


def _make(pipe: Any, unit: Unit, position: int, plan: BatchPlan, run: BatchRun) -> None:
    """Make and write one video, appending its result; a failure is reported and the batch goes on."""
    job = unit.job
    run.observer.video(position, unit)
    started = time.perf_counter()
    try:
        claim = run.claims.take(unit.key) if run.claims is not None else None
        if plan.split and plan.gathered:  # every rank follows the lead's claim, or they part ways and hang
            claim = gather_objects(claim)[0]
        if claim is not None and not claim.mine:  # another batch makes it, or made it meanwhile
            path = str(claim.path) if claim.path else None
            run.results.append(JobResult(job.line, job.prompt, "skipped", path, video_index=unit.video_index, rank=plan.rank, note=claim.reason))
            run.observer.skipped(unit, claim.reason, path)
            run.observer.advance()
            return
        video = pipe.run(unit.prepared, callback=run.observer.progress)
        if plan.split and not plan.lead:  # rank 0 writes and records it
            run.observer.advance()
            return
        video.metadata.update({SIDECAR_KEY: unit.key, "batch_file": str(plan.file), "batch_line": job.line})
        with run.write_guard():  # a finished video is saved whole, sidecar included, and counted
            path = video.save_new(run.out, fps=run.fps)
            seconds = time.perf_counter() - started
            run.results.append(JobResult(job.line, job.prompt, "done", str(path), seconds, video_index=unit.video_index, rank=plan.rank))
            if run.tracker is not None:
                run.tracker.log_video(path, video.metadata, seconds)
            run.observer.written(path, video, unit)
    except Cancelled:
        raise
    except Exception as e:  # one bad video is reported and the batch goes on
        if run.debug:
            traceback.print_exc()
        _failed(unit, e, time.perf_counter() - started, plan, run)
        return
    run.observer.advance()


def _failed(unit: Unit, error: Exception, seconds: float, plan: BatchPlan, run: BatchRun) -> None:
    """Report and record one video that could not be made."""
    message = error.message if isinstance(error, CogvidError) else f"{type(error).__name__}: {error}"
    run.observer.failed(unit, error)
    job = unit.job
    run.results.append(JobResult(job.line, job.prompt, "failed", None, seconds, message, video_index=unit.video_index, rank=plan.rank))
    run.observer.advance()


def gather_results(plan: BatchPlan, results: list[JobResult]) -> list[JobResult] | None:
    """Every rank's results on every rank (None when they cannot be gathered: each rank keeps its own)."""
    if plan.world_size == 1:
        return results
    everyone = gather_objects(results) if plan.gathered else None
    if everyone is not None and plan.split:
        everyone = everyone[:1]  # every rank made every video; rank 0 recorded them
    return [r for part in everyone for r in part] if everyone is not None else None


def check_results(results: list[JobResult]) -> None:
    """GenerationError (exit 1) naming the failed lines, if any line failed."""
    failed = sorted({r.line for r in results if not r.ok})
    if not failed:
        return
    shown = ", ".join(str(n) for n in failed[:10]) + (", ..." if len(failed) > 10 else "")
    total = len({r.line for r in results})
    raise GenerationError(
        f"{len(failed)} of {total} prompt line(s) failed: line{'s' if len(failed) > 1 else ''} {shown}",
        hint="fix those lines, then rerun with --resume to make only what is missing",
    )


__all__ = ["BatchObserver", "BatchPlan", "BatchRun", "JobResult", "Unit", "check_results", "gather_results", "plan_batch", "run_plan"]
