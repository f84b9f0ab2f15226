"""VideoPipeline: a loaded engine that turns prepared requests into Videos, emitting progress events.

encode text -> (encode image) -> prepare noise -> sample -> decode -> frames. The request is resolved
and checked by :mod:`cogvid.prepare` before anything loads; no Typer or rich here (the CLI renders the
events).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from cogvid import __version__
from cogvid.devices import dtype_name, resolve_device, resolve_dtype
from cogvid.distributed import rank_device, rank_info
from cogvid.engine import VideoDiffusionEngine
from cogvid.errors import Cancelled, GenerationError, UsageError
from cogvid.prepare import PreparedRequest, ResolvedModel, prepare, resolve_model
from cogvid.request import GenerationRequest, LoraSpec, ModelChoice
from cogvid.spec import Generation, ModelSpec


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: a stage starting or ending, a denoising step, or a decoded chunk.

    ``kind`` is ``"stage"`` (``stage`` starts), ``"stage_done"`` (with ``seconds``), ``"step"``
    (``index`` of ``total`` denoising steps done, at DDPM ``timestep`` or noise level ``sigma``,
    whichever the sampler walks), ``"decode"`` (``index`` of ``total`` VAE chunks done) or ``"note"``
    (a ``message`` to show, e.g. the offload mode ``--memory auto`` picked).
    """

    kind: str
    stage: str
    index: int = 0
    total: int = 0
    timestep: int | None = None
    sigma: float | None = None
    seconds: float | None = None
    message: str | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class Video:
    """A generated video: uint8 frames (T, H, W, 3), its fps and everything needed to reproduce it.

    ``metadata["request"]`` is the prepared request (the sidecar's replayable part); ``latents`` the
    denoised latents (B, T, C, H/8, W/8) as decoded.
    """

    frames: np.ndarray
    fps: int
    metadata: dict[str, Any] = field(default_factory=dict)
    latents: torch.Tensor | None = None  # the sampler's float32 output (1, T, C, h, w); engine.decode() re-decodes it exactly

    def save(self, path: str | Path, fps: int | None = None) -> Path:
        """Write the MP4 and its JSON sidecar as a unit; returns the video path.

        Both names must be free; on any failure neither file is left (see :mod:`cogvid.outputs`).
        """
        from cogvid.outputs import publish_pair

        if Path(path).suffix.lower() != ".mp4":
            raise UsageError(f"cannot save {path}: cogvid writes H.264 MP4 files", hint="give a path ending in .mp4")
        return publish_pair(self.frames, fps or self.fps, self.metadata, path)

    def save_new(self, folder: str | Path, fps: int | None = None) -> Path:
        """Write under ``folder/<date>/<n>-<slug>-s<seed>.mp4`` (the next free number) with its sidecar,
        as ``cogvid t2v``, ``batch`` and the REPL do."""
        from cogvid.outputs import publish

        return publish(self, folder, fps=fps)


def load(
    model: str | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    dtype: str | None = None,
    configs: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    lora: Sequence[str | Path | LoraSpec] = (),
    progress: ProgressCallback | None = None,
    *,
    offload: str | bool | None = None,
    memory: str = "auto",
    compile: bool = False,
    quantize: str | None = None,
    quantize_text: bool = False,
    attention: str = "sdpa",
    resolved: ResolvedModel | None = None,
    text_encoder: bool = True,
) -> VideoPipeline:
    """Load a model by registry name (``cogvideox-2b``, ...) or from original-style YAMLs (``configs=``).

    Without a name or configs, the embedded demo model ``cogvideox-tiny``. ``weights`` is the
    weights root for registry models. ``device="auto"`` picks CUDA when present; ``dtype``
    defaults to the model's (fp16/bf16) on GPU and float32 on CPU. ``lora``: SAT LoRA checkpoint
    folders as ``"PATH"``/``"PATH:SCALE"`` strings or :class:`~cogvid.request.LoraSpec`, merged into
    the DiT at load time (scale multiplies SAT's ``lora_alpha / r``). ``offload`` (``none``, ``text``,
    ``model``, ``blocks``; True is ``model``) says how the parts share the GPU; None lets ``memory``
    decide: ``auto`` fits the model's default video into the free memory of the CUDA device, a size
    (``"24GiB"``) into that, ``off`` keeps everything on it (see :mod:`cogvid.memory_plan`).
    ``resolved`` (from :func:`cogvid.prepare.resolve_model`) replaces the model, weights, configs and
    overrides; the other arguments, given beside it, apply to it. Speed (all off by default, see
    :mod:`cogvid.speed`): ``compile`` compiles the DiT blocks with torch.compile, ``quantize``
    (``int8wo``, ``int8dq``, ``fp8wo``, ``fp8dq``) quantizes the DiT's linear layers with torchao (and T5's
    with ``quantize_text``), ``attention`` picks the kernel (``sdpa``, ``flash``, ``sage``, ``auto``).
    ``text_encoder=False`` skips the T5 (a torchrun rank that is not rank 0 of a split ``--parallel`` run: rank 0 encodes).
    """
    if resolved is None:
        choice = ModelChoice(model, weights, tuple(configs), tuple(overrides), tuple(lora), device, dtype, offload, memory,
                             compile=compile, quantize=quantize, quantize_text=quantize_text, attention=attention)
        resolved = resolve_model(choice)
    else:  # how to load may still be given beside a resolved model (what to load may not)
        given = {"device": device, "dtype": dtype, "loras": tuple(lora), "offload": offload, "memory": memory,
                 "compile": compile, "quantize": quantize, "quantize_text": quantize_text, "attention": attention}
        defaults = {"device": "auto", "dtype": None, "loras": (), "offload": None, "memory": "auto", "compile": False,
                    "quantize": None, "quantize_text": False, "attention": "sdpa"}
        changes = {key: value for key, value in given.items() if value != defaults[key]}
        if changes:
            resolved = dataclasses.replace(resolved, choice=resolved.choice.replace(**changes))
    choice = resolved.choice
    _, world_size, local_rank = rank_info()
    run_device = resolve_device(rank_device(choice.device, local_rank, world_size))  # cuda:LOCAL_RANK under torchrun
    run_dtype = resolve_dtype(choice.dtype, resolved.model_dtype, run_device)
    from cogvid.speed import setup as speed

    kernel = speed.check_device(choice, run_device, run_dtype)  # before any weights load
    report = progress or (lambda event: None)
    started = time.perf_counter()
    report(ProgressEvent("stage", "loading"))
    mode, note = _offload_mode(resolved, run_device)
    if note:
        report(ProgressEvent("note", "loading", message=note))
    engine = VideoDiffusionEngine.from_config(
        resolved.cfg, resolved.spec, resolved.paths, device=run_device, dtype=run_dtype, model_label=resolved.name,
        lora=choice.loras, text_encoder=text_encoder, offload=mode,
    )
    resolved = dataclasses.replace(resolved, choice=choice.replace(offload=mode))
    engine.speed = speed.apply(engine, choice, kernel)
    seconds = time.perf_counter() - started
    report(ProgressEvent("stage_done", "loading", seconds=seconds))
    return VideoPipeline(engine, resolved, load_seconds=seconds)


def settle_memory(prepared: Sequence[PreparedRequest]) -> tuple[list[PreparedRequest], str | None]:
    """Fill in the offload mode and VAE tiling left to ``--memory`` for requests one load will run,
    reading the free memory of their CUDA device (see :func:`cogvid.memory_plan.settle`)."""
    from cogvid.devices import free_memory
    from cogvid.memory_plan import settle

    if not prepared:
        return [], None
    choice = prepared[0].request.model
    device = resolve_device(choice.device)
    undecided = choice.offload is None or any(p.request.vae_tiling is None for p in prepared)
    free = free_memory(device) if undecided and choice.memory == "auto" else None
    return settle(prepared, free, where=str(device), device=str(device))


def _offload_mode(resolved: ResolvedModel, device: torch.device) -> tuple[str, str | None]:
    """The offload mode to load with, and a line saying what ``--memory`` picked (None if nothing was picked)."""
    from cogvid.devices import free_memory
    from cogvid.memory_plan import fit, model_plans, no_fit_error, parse_budget

    choice = resolved.choice
    if choice.offload is not None:
        return choice.offload, None
    budget = parse_budget(choice.memory)
    if budget is None and choice.memory == "auto":
        budget = free_memory(device)
    if budget is None or device.type != "cuda":
        return "none", None
    result = fit(model_plans(resolved), budget)
    if result.plan is None:
        raise no_fit_error(result, str(device))
    return result.plan.offload, result.message(str(device))


class VideoPipeline:
    """A loaded model ready to generate; keep it to generate many videos without reloading."""

    def __init__(self, engine: VideoDiffusionEngine, resolved: ResolvedModel, load_seconds: float = 0.0) -> None:
        self.engine = engine
        self.resolved = resolved
        self.load_seconds = load_seconds
        self._runtimes: dict[Any, Any] = {}  # ParallelPlan -> ParallelRuntime (its process groups)

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def spec(self) -> ModelSpec:
        return self.engine.spec

    @property
    def config(self) -> DictConfig:
        return self.engine.cfg

    def prepare(self, request: GenerationRequest, picture: Any = None) -> PreparedRequest:
        """Resolve and check ``request`` for this model (its model choice is this pipeline's)."""
        return prepare(request.replace(model=self.resolved.choice), self.resolved, picture=picture)

    def generate(
        self,
        prompt: str,
        image: str | Path | Any | None = None,
        negative_prompt: str = "",
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        latents: torch.Tensor | None = None,
        callback: ProgressCallback | None = None,
        decode: str = "original",
        vae_tiling: bool | None = None,
        cache: str | None = None,
    ) -> Video:
        """Generate one video. ``image`` is a path or a PIL image; ``latents`` (B, T, C, h, w) replaces the
        initial noise; ``callback`` receives ProgressEvents and may raise :class:`cogvid.Cancelled` to stop
        between steps. ``decode="diffusers"`` decodes 1.5 videos as diffusers does (81 frames for 81).
        ``vae_tiling`` None tiles the decode only when the memory plan says it would not fit otherwise.
        ``cache`` is a step cache, ``"teacache"`` or ``"fbcache"`` with an optional ``":THRESHOLD"``."""
        from PIL import Image

        picture = image if isinstance(image, Image.Image) else None
        request = GenerationRequest(
            prompt=prompt, negative=negative_prompt, image=None if picture is not None else image,
            frames=num_frames, height=height, width=width, steps=steps, guidance=guidance, sampler=sampler,
            seed=seed, decode=decode, vae_tiling=vae_tiling, cache=cache,
        )
        return self.run(self.prepare(request, picture=picture), latents=latents, callback=callback, picture=picture)

    def run(
        self,
        prepared: PreparedRequest,
        *,
        latents: torch.Tensor | None = None,
        callback: ProgressCallback | None = None,
        picture: Any = None,
    ) -> Video:
        """Make the video of a prepared request (its first, for ``num_videos`` > 1: see ``prepared.videos()``)."""
        report = callback or (lambda event: None)
        prepared, note = self._settled(prepared)
        if note:
            report(ProgressEvent("note", "decoding", message=note))
        runtime = self._runtime(prepared)
        if runtime is not None:
            prepared = _agreed(prepared, runtime)
        engine, request = self.engine, prepared.request
        timings: dict[str, float] = {}

        def stage(name: str) -> Callable[[], None]:
            report(ProgressEvent("stage", name))
            started = time.perf_counter()

            def done() -> None:
                timings[name] = time.perf_counter() - started
                report(ProgressEvent("stage_done", name, seconds=timings[name]))

            return done

        noise = self._initial_noise(prepared, latents)
        device_generator = torch.Generator(device=engine.device).manual_seed(request.seed)

        def conditioning() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
            done = stage("text")
            cond, uncond = engine.encode_text(request.prompt, request.negative)
            done()
            if request.image is not None or picture is not None:
                done = stage("image")
                image_latents = engine.encode_image(self._image_pixels(prepared, picture), prepared.latent_frames, device_generator)
                cond = {**cond, "concat": image_latents}
                uncond = {**uncond, "concat": image_latents}
                done()
            return cond, uncond

        # Split over processes, the lead encodes once and every rank receives the same conditioning.
        if runtime is None:
            cond, uncond = conditioning()
        else:
            cond, uncond = runtime.share_conditioning(conditioning)
            device_generator.set_state(runtime.agree(device_generator.get_state()))  # the image encoder drew from it
        sampler = engine.build_sampler(prepared.sampler.config)
        level_kind = getattr(sampler, "level_kind", "sigma")

        def on_step(index: int, total: int, level: float) -> None:
            where = {"timestep": int(level)} if level_kind == "timestep" else {"sigma": level}
            report(ProgressEvent("step", "denoising", index + 1, total, **where))

        done = stage("denoising")
        cache = self._step_cache(prepared)
        with runtime.denoising(engine.network, engine.denoise, noise.shape[0]) if runtime else _plain() as denoiser, \
                _caching(engine.network, cache):
            samples = engine.sample(cond, uncond, noise, sampler, generator=device_generator, callback=on_step, denoiser=denoiser)
        done()
        _require_finite(samples, "the denoised latents", latents is not None)

        def on_chunk(index: int, total: int) -> None:
            report(ProgressEvent("decode", "decoding", index + 1, total))

        done = stage("decoding")
        decoded = engine.decode(
            samples, schedule=prepared.decode_schedule, tiling=request.vae_tiling, callback=on_chunk,
            group=runtime.decode_group if runtime else None,
        )
        done()
        _require_finite(decoded, "the decoded frames", latents is not None)
        from cogvid.video import frames_to_uint8

        pixels_uint8 = frames_to_uint8(decoded[0])
        metadata = self._metadata(prepared, pixels_uint8, timings)
        if prepared.parallel.world > 1:
            metadata["parallel"] = prepared.parallel.describe()
        speed = getattr(engine, "speed", None)
        if speed is not None and speed != type(speed)():
            metadata["speed"] = speed.to_json()
        if cache is not None:
            metadata["step_cache"] = {"setting": request.cache, **cache.stats()}
        return Video(frames=pixels_uint8, fps=request.fps or self.spec.fps, metadata=metadata, latents=samples)

    def _runtime(self, prepared: PreparedRequest) -> Any:
        """The process groups of ``prepared``'s split (None when this process makes the video alone)."""
        plan = prepared.parallel
        if not plan.splits_video:
            return None
        if plan not in self._runtimes:
            from cogvid.parallel.runtime import ParallelRuntime

            self._runtimes[plan] = ParallelRuntime(plan, self.engine.device)
        return self._runtimes[plan]

    def _step_cache(self, prepared: PreparedRequest) -> Any:
        """The step cache of a request (None without one), for its number of steps."""
        if prepared.request.cache is None:
            return None
        from cogvid.speed.cache import make_cache
        from cogvid.speed.calibration import teacache_coefficients

        coefficients = teacache_coefficients(self.resolved)[0] if prepared.request.cache.startswith("teacache") else None
        return make_cache(prepared.request.cache, prepared.sampler.steps, coefficients)

    def _settled(self, prepared: PreparedRequest) -> tuple[PreparedRequest, str | None]:
        """The request as it runs on this engine: its offload mode, and VAE tiling when it was left to
        ``--memory`` (on only if the decode would not fit otherwise). Also arms the out-of-memory advice."""
        from cogvid.devices import free_memory
        from cogvid.memory_plan import gib, oom_explainer, parse_budget, plan_for, usable_bytes

        engine, request = self.engine, prepared.request
        note, tiling = None, request.vae_tiling
        if tiling is None:
            tiling = False
            budget = parse_budget(request.model.memory)
            if budget is None and request.model.memory == "auto":
                budget = free_memory(engine.device, own=True)
            if budget is not None and engine.device.type == "cuda":
                plan = plan_for(prepared, offload=engine.offload, vae_tiling=False)
                tiling = plan.peak > usable_bytes(budget)
                if tiling:
                    note = (f"memory: {plan.settings} needs about {gib(plan.peak)} ({plan.peak_stage.name}), "
                            f"more than {gib(budget)}: decoding in tiles")
        settled = prepared.request.replace(model=request.model.replace(offload=engine.offload), vae_tiling=tiling)
        prepared = dataclasses.replace(prepared, request=settled)
        engine.explain_memory = oom_explainer(prepared, device=engine.device.type)
        return prepared, note

    def _initial_noise(self, prepared: PreparedRequest, latents: torch.Tensor | None) -> torch.Tensor:
        shape = prepared.latent_shape
        if latents is None:
            return torch.randn(shape, generator=torch.Generator().manual_seed(prepared.request.seed), dtype=torch.float32)
        if not isinstance(latents, torch.Tensor):
            raise UsageError(f"latents must be a torch.Tensor, found {type(latents).__name__}")
        if tuple(latents.shape) != shape:
            raise UsageError(f"latents have shape {tuple(latents.shape)}, this request needs {shape}")
        if not bool(torch.isfinite(latents).all()):
            raise UsageError("latents hold NaN or infinite values", hint="pass finite initial noise, e.g. torch.randn(shape)")
        return latents.to(torch.float32)

    def _image_pixels(self, prepared: PreparedRequest, picture: Any) -> torch.Tensor:
        """The conditioning image, preprocessed as the original does for this model generation."""
        from cogvid.image import load_image, prepare_image_v1, prepare_image_v15

        picture = picture if picture is not None else load_image(prepared.request.image)
        if self.spec.generation is Generation.V1_0:
            return prepare_image_v1(picture, prepared.height, prepared.width)
        return prepare_image_v15(picture, prepared.height // 8, prepared.width // 8, fit=prepared.image_fit or "crop")

    def _metadata(self, prepared: PreparedRequest, frames: np.ndarray, timings: dict[str, float]) -> dict[str, Any]:
        """The sidecar: the replayable request plus what came out and how long each stage took."""
        engine, request = self.engine, prepared.request
        return {
            "prompt": request.prompt,
            "negative_prompt": request.negative,
            "model": self.name,
            "image": str(request.image) if request.image is not None else None,
            "sampler": prepared.sampler.name,
            "steps": prepared.sampler.steps,
            "guidance": prepared.sampler.guidance,
            "seed": request.seed,
            "height": int(frames.shape[1]),
            "width": int(frames.shape[2]),
            "frames": int(frames.shape[0]),
            "requested_frames": request.frames,
            "latent_frames": prepared.latent_frames,
            "decode": prepared.decode_schedule or self.spec.generation.value,
            "vae_tiling": request.vae_tiling,
            "dtype": dtype_name(engine.dtype),
            "device": str(engine.device),
            "loras": [spec.to_json() for spec in engine.loras],
            "cogvid_version": __version__,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "request": request.to_json(),
        }


def _agreed(prepared: PreparedRequest, runtime: Any) -> PreparedRequest:
    """``prepared`` with the lead's seed (a seed drawn on each rank differs); the prompts must match."""
    import dataclasses

    prompt, seed = runtime.agree((prepared.request.prompt, prepared.request.seed))
    if prompt != prepared.request.prompt:
        raise UsageError(
            "the processes of this torchrun world were given different prompts",
            hint="give every rank the same command line (torchrun does this)",
        )
    if seed == prepared.request.seed:
        return prepared
    return dataclasses.replace(prepared, request=prepared.request.replace(seed=seed))


@contextlib.contextmanager
def _plain() -> Any:
    yield None


def _caching(network: Any, cache: Any) -> Any:
    """A context in which ``network`` runs with the step ``cache`` (nothing changes without one)."""
    if cache is None:
        return contextlib.nullcontext()
    from cogvid.speed.cache import step_cache

    return step_cache(network, cache)


def _require_finite(tensor: torch.Tensor, what: str, given_latents: bool) -> None:
    """GenerationError (exit 1, nothing written) when ``tensor`` holds NaN or infinity."""
    if bool(torch.isfinite(tensor).all()):
        return
    causes = "fp16 overflow (try --dtype bf16 or fp32), a LoRA scale far from 1"
    if given_latents:
        causes += ", or the latents passed in"
    raise GenerationError(f"{what} hold NaN or infinite values", hint=f"likely causes: {causes}; nothing was written")


__all__ = ["Cancelled", "ProgressEvent", "ResolvedModel", "Video", "VideoPipeline", "load", "resolve_model", "settle_memory"]
