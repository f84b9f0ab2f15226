"""VideoPipeline: a loaded engine that turns prepared requests into Videos, emitting progress events.

encode text -> (encode image) -> prepare noise -> sample -> decode -> frames. The request is resolved
and checked by :mod:`cogvid.prepare` before anything loads; no Typer or rich here (the CLI renders the
events).
"""

from __future__ import annotations

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
    latents: torch.Tensor | None = None

    def save(self, path: str | Path, fps: int | None = None) -> Path:
        """Write the MP4 and its JSON sidecar (both atomically, never overwriting); returns the video path."""
        from cogvid.video import write_sidecar, write_video

        if Path(path).suffix.lower() != ".mp4":
            raise UsageError(f"cannot save {path}: cogvid writes H.264 MP4 files", hint="give a path ending in .mp4")
        fps = fps or self.fps
        path = write_video(self.frames, path, fps=fps)
        write_sidecar(path, {**self.metadata, "fps": fps, "file": path.name})
        return path

    def save_new(self, folder: str | Path, fps: int | None = None) -> Path:
        """Write under ``folder/<date>/<n>-<slug>-s<seed>.mp4`` (the next free number) with its sidecar."""
        from cogvid.video import output_path

        path = output_path(folder, str(self.metadata.get("prompt", "")), int(self.metadata.get("seed", 0)))
        try:
            return self.save(path, fps=fps)
        except BaseException:
            if path.exists() and path.stat().st_size == 0:
                path.unlink()  # give back the reserved name
            raise


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
    resolved: ResolvedModel | None = None,
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
    ``resolved`` (from :func:`cogvid.prepare.resolve_model`) replaces every other model argument.
    """
    if resolved is None:
        choice = ModelChoice(model, weights, tuple(configs), tuple(overrides), tuple(lora), device, dtype, offload, memory)
        resolved = resolve_model(choice)
    choice = resolved.choice
    run_device = resolve_device(choice.device)
    run_dtype = resolve_dtype(choice.dtype, resolved.model_dtype, run_device)
    report = progress or (lambda event: None)
    started = time.perf_counter()
    report(ProgressEvent("stage", "loading"))
    mode, note = _offload_mode(resolved, run_device)
    if note:
        report(ProgressEvent("note", "loading", message=note))
    engine = VideoDiffusionEngine.from_config(
        resolved.cfg, resolved.spec, resolved.paths, device=run_device, dtype=run_dtype, model_label=resolved.name,
        lora=choice.loras, offload=mode,
    )
    resolved = dataclasses.replace(resolved, choice=choice.replace(offload=mode))
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
    ) -> Video:
        """Generate one video. ``image`` is a path or a PIL image; ``latents`` (B, T, C, h, w) replaces the
        initial noise; ``callback`` receives ProgressEvents and may raise :class:`cogvid.Cancelled` to stop
        between steps. ``decode="diffusers"`` decodes 1.5 videos as diffusers does (81 frames for 81).
        ``vae_tiling`` None tiles the decode only when the memory plan says it would not fit otherwise."""
        from PIL import Image

        picture = image if isinstance(image, Image.Image) else None
        request = GenerationRequest(
            prompt=prompt, negative=negative_prompt, image=None if picture is not None else image,
            frames=num_frames, height=height, width=width, steps=steps, guidance=guidance, sampler=sampler,
            seed=seed, decode=decode, vae_tiling=vae_tiling,
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
        done = stage("text")
        cond, uncond = engine.encode_text(request.prompt, request.negative)
        done()
        device_generator = torch.Generator(device=engine.device).manual_seed(request.seed)
        if request.image is not None or picture is not None:
            done = stage("image")
            image_latents = engine.encode_image(self._image_pixels(prepared, picture), prepared.latent_frames, device_generator)
            cond = {**cond, "concat": image_latents}
            uncond = {**uncond, "concat": image_latents}
            done()
        sampler = engine.build_sampler(prepared.sampler.config)
        level_kind = getattr(sampler, "level_kind", "sigma")

        def on_step(index: int, total: int, level: float) -> None:
            where = {"timestep": int(level)} if level_kind == "timestep" else {"sigma": level}
            report(ProgressEvent("step", "denoising", index + 1, total, **where))

        done = stage("denoising")
        samples = engine.sample(cond, uncond, noise, sampler, generator=device_generator, callback=on_step)
        done()
        _require_finite(samples, "the denoised latents", latents is not None)

        def on_chunk(index: int, total: int) -> None:
            report(ProgressEvent("decode", "decoding", index + 1, total))

        done = stage("decoding")
        decoded = engine.decode(samples, schedule=prepared.decode_schedule, tiling=request.vae_tiling, callback=on_chunk)
        done()
        _require_finite(decoded, "the decoded frames", latents is not None)
        from cogvid.video import frames_to_uint8

        pixels_uint8 = frames_to_uint8(decoded[0])
        metadata = self._metadata(prepared, pixels_uint8, timings)
        return Video(frames=pixels_uint8, fps=request.fps or self.spec.fps, metadata=metadata, latents=samples)

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


def _require_finite(tensor: torch.Tensor, what: str, given_latents: bool) -> None:
    """GenerationError (exit 1, nothing written) when ``tensor`` holds NaN or infinity."""
    if bool(torch.isfinite(tensor).all()):
        return
    causes = "fp16 overflow (try --dtype bf16 or fp32), a LoRA scale far from 1"
    if given_latents:
        causes += ", or the latents passed in"
    raise GenerationError(f"{what} hold NaN or infinite values", hint=f"likely causes: {causes}; nothing was written")


__all__ = ["Cancelled", "ProgressEvent", "ResolvedModel", "Video", "VideoPipeline", "load", "resolve_model", "settle_memory"]
