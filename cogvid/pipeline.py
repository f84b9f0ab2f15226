"""VideoPipeline: a loaded engine that turns a request into a Video, emitting progress events.

validate -> encode text -> (encode image) -> prepare noise -> sample -> decode -> frames.
No Typer or rich here: the CLI renders the events.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from cogvid import __version__
from cogvid.config import load_config
from cogvid.devices import DTYPE_NAMES, resolve_device, resolve_dtype
from cogvid.engine import VideoDiffusionEngine, WeightPaths, weight_paths_from_config
from cogvid.errors import Cancelled, UsageError
from cogvid.lora import LoraSpec, parse_specs
from cogvid.registry import ModelEntry, default_model_name, get_model
from cogvid.spec import ModelSpec, check_frames, check_size, spec_from_config


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: a stage starting or ending, a denoising step, or a decoded chunk.

    ``kind`` is ``"stage"`` (``stage`` starts), ``"stage_done"`` (with ``seconds``), ``"step"``
    (``index`` of ``total`` denoising steps done, ``level`` the timestep or sigma) or ``"decode"``
    (``index`` of ``total`` VAE chunks done).
    """

    kind: str
    stage: str
    index: int = 0
    total: int = 0
    level: float | None = None
    seconds: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class Video:
    """A generated video: uint8 frames (T, H, W, 3), its fps and everything needed to reproduce it."""

    frames: np.ndarray
    fps: int
    metadata: dict[str, Any] = field(default_factory=dict)
    latents: torch.Tensor | None = None

    def save(self, path: str | Path, fps: int | None = None) -> Path:
        """Write the MP4 and its JSON sidecar as a unit; returns the video path.

        Both names must be free; on any failure neither file is left (see :mod:`cogvid.outputs`).
        """
        from cogvid.outputs import publish_pair

        return publish_pair(self.frames, fps or self.fps, self.metadata, path)


def _model_dtype_name(entry: ModelEntry | None, spec: ModelSpec) -> str:
    return entry.dtype if entry is not None else spec.model_dtype


@dataclass(frozen=True)
class ResolvedModel:
    """A model's merged configuration and weight paths, known before anything heavy is loaded."""

    name: str
    entry: ModelEntry | None
    cfg: DictConfig
    spec: ModelSpec
    paths: WeightPaths


def resolve_model(
    model: str | None = None,
    weights: str | Path | None = None,
    configs: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
) -> ResolvedModel:
    """Merge the configuration of a registry model (or of original-style YAMLs) and locate its weights."""
    if model is None and not configs:
        model = default_model_name()
    entry = get_model(model) if model is not None else None
    files = [*(entry.config_files() if entry else ()), *configs]
    cfg = load_config(files, overrides, defaults=entry.defaults() if entry else None)
    spec = spec_from_config(cfg, task=entry.task if entry else None, default_fps=entry.fps if entry else None)
    if entry is not None:
        parts = entry.weight_paths(weights)
        paths = WeightPaths(parts["transformer"], parts["vae"], parts["t5"])
    else:
        paths = weight_paths_from_config(cfg)
    name = entry.name if entry else ", ".join(str(c) for c in configs)
    return ResolvedModel(name, entry, cfg, spec, paths)


def load(
    model: str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    configs: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    lora: Sequence[str | Path | LoraSpec] = (),
    progress: ProgressCallback | None = None,
    resolved: ResolvedModel | None = None,
) -> VideoPipeline:
    """Load a model by registry name (``cogvideox-2b``, ...) or from original-style YAMLs (``configs=``).

    Without a name or configs, the embedded demo model ``cogvideox-tiny``. ``weights`` is the
    weights root for registry models. ``device="auto"`` picks CUDA when present; ``dtype``
    defaults to the model's (fp16/bf16) on GPU and float32 on CPU. ``lora``: SAT LoRA checkpoint
    folders as ``"PATH"``/``"PATH:SCALE"`` strings or :class:`~cogvid.lora.LoraSpec`, merged into
    the DiT at load time (scale multiplies SAT's ``lora_alpha / r``).
    """
    lora_specs = parse_specs(lora)
    resolved = resolved or resolve_model(model, weights, configs, overrides)
    run_device = resolve_device(device)
    run_dtype = resolve_dtype(dtype, _model_dtype_name(resolved.entry, resolved.spec), run_device)
    report = progress or (lambda event: None)
    started = time.perf_counter()
    report(ProgressEvent("stage", "loading"))
    engine = VideoDiffusionEngine.from_config(
        resolved.cfg, resolved.spec, resolved.paths, device=run_device, dtype=run_dtype, model_label=resolved.name,
        lora=lora_specs,
    )
    seconds = time.perf_counter() - started
    report(ProgressEvent("stage_done", "loading", seconds=seconds))
    return VideoPipeline(engine, name=resolved.name, entry=resolved.entry, load_seconds=seconds)


def validate_request(
    spec: ModelSpec, name: str, image: Any, num_frames: int | None, height: int | None, width: int | None
) -> tuple[int, int, int]:
    """Check a request against the model before any heavy work; returns (frames, height, width)."""
    if spec.task == "i2v" and image is None:
        raise UsageError(f"{name} is an image-to-video model and needs an image", hint="use `cogvid i2v IMAGE PROMPT`")
    if spec.task == "t2v" and image is not None:
        raise UsageError(f"{name} is a text-to-video model and takes no image", hint="use `cogvid t2v PROMPT`, or an -i2v model")
    frames = num_frames if num_frames is not None else spec.default_frames
    check_frames(spec, frames)
    if (height is None) != (width is None):
        raise UsageError("give both height and width", hint="e.g. --size 480x720")
    if height is None or width is None:
        height, width = spec.default_height, spec.default_width
    check_size(spec, height, width)
    return frames, height, width


class VideoPipeline:
    """A loaded model ready to generate; keep it to generate many videos without reloading."""

    def __init__(self, engine: VideoDiffusionEngine, name: str, entry: ModelEntry | None = None, load_seconds: float = 0.0) -> None:
        self.engine = engine
        self.name = name
        self.entry = entry
        self.load_seconds = load_seconds

    @property
    def spec(self) -> ModelSpec:
        return self.engine.spec

    @property
    def config(self) -> DictConfig:
        return self.engine.cfg

    def resolve_request(self, image: Any, num_frames: int | None, height: int | None, width: int | None) -> tuple[int, int, int]:
        """Validate a request for this model; returns (frames, height, width)."""
        return validate_request(self.spec, self.name, image, num_frames, height, width)

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
        decode_schedule: str | None = None,
        vae_tiling: bool = False,
    ) -> Video:
        """Generate one video. ``latents`` (B, T, C, h, w) replaces the initial noise; ``callback``
        receives ProgressEvents and may raise :class:`cogvid.Cancelled` to stop between steps."""
        report = callback or (lambda event: None)
        engine, spec = self.engine, self.spec
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError("the prompt is empty", hint="describe the video, e.g. \"a red ball bouncing\"")
        size_given = height is not None or width is not None
        frames, height, width = self.resolve_request(image, num_frames, height, width)
        sampler_obj = engine.make_sampler(sampler, steps, guidance)
        seed = random.randrange(2**31) if seed is None else int(seed)
        timings: dict[str, float] = {}

        def stage(name: str) -> Callable[[], None]:
            report(ProgressEvent("stage", name))
            started = time.perf_counter()

            def done() -> None:
                timings[name] = time.perf_counter() - started
                report(ProgressEvent("stage_done", name, seconds=timings[name]))

            return done

        latent_frames = spec.latent_frames(frames)
        done = stage("text")
        cond, uncond = engine.encode_text(prompt, negative_prompt)
        done()
        device_generator = torch.Generator(device=engine.device).manual_seed(seed)
        if image is not None:
            done = stage("image")
            pixels, height, width = self._prepare_image(image, height, width, size_given)
            image_latents = engine.encode_image(pixels, latent_frames, device_generator)
            cond = {**cond, "concat": image_latents}
            uncond = {**uncond, "concat": image_latents}
            done()
        latent_shape = (1, latent_frames, spec.latent_channels, height // 8, width // 8)
        if latents is not None:
            if tuple(latents.shape) != latent_shape:
                raise UsageError(f"latents have shape {tuple(latents.shape)}, this request needs {latent_shape}")
            noise = latents.to(torch.float32)
        else:
            noise = torch.randn(latent_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)

        def on_step(index: int, total: int, level: float) -> None:
            report(ProgressEvent("step", "denoising", index + 1, total, level=level))

        done = stage("denoising")
        samples = engine.sample(cond, uncond, noise, sampler_obj, generator=device_generator, callback=on_step)
        done()

        def on_chunk(index: int, total: int) -> None:
            report(ProgressEvent("decode", "decoding", index + 1, total))

        done = stage("decoding")
        decoded = engine.decode(samples, schedule=decode_schedule, tiling=vae_tiling, callback=on_chunk)
        done()
        from cogvid.video import frames_to_uint8

        pixels_uint8 = frames_to_uint8(decoded[0])
        metadata = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "model": self.name,
            "image": str(image) if isinstance(image, (str, Path)) else None,
            "sampler": sampler or _short_sampler_name(engine.sampler_config.target),
            "steps": sampler_obj.num_steps,
            "guidance": _guidance_of(sampler_obj),
            "seed": seed,
            "height": int(pixels_uint8.shape[1]),
            "width": int(pixels_uint8.shape[2]),
            "frames": int(pixels_uint8.shape[0]),
            "requested_frames": frames,
            "latent_frames": latent_frames,
            "decode": decode_schedule or spec.generation,
            "vae_tiling": vae_tiling,
            "dtype": DTYPE_NAMES.get(engine.dtype, str(engine.dtype)),
            "device": str(engine.device),
            "loras": [spec.to_dict() for spec in engine.loras],
            "cogvid_version": __version__,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        return Video(frames=pixels_uint8, fps=spec.fps, metadata=metadata, latents=samples)

    def _prepare_image(self, image: Any, height: int, width: int, size_given: bool) -> tuple[torch.Tensor, int, int]:
        """Load and resize the conditioning image as the original does for this model generation."""
        from PIL import Image

        from cogvid.image import latent_size_v15, load_image, prepare_image_v1, prepare_image_v15

        picture = image if isinstance(image, Image.Image) else load_image(image)
        if self.spec.generation == "1.0":
            return prepare_image_v1(picture, height, width), height, width
        if size_given:
            return prepare_image_v15(picture, height // 8, width // 8, fit="crop"), height, width
        latent_h, latent_w = latent_size_v15(picture.width, picture.height)
        check_size(self.spec, latent_h * 8, latent_w * 8)
        return prepare_image_v15(picture, latent_h, latent_w), latent_h * 8, latent_w * 8


def _short_sampler_name(target: str) -> str:
    from cogvid.diffusion import SAMPLER_NAMES

    for name, full in SAMPLER_NAMES.items():
        if full == target:
            return name
    return target


def _guidance_of(sampler: Any) -> float | None:
    scale = getattr(getattr(sampler, "guider", None), "scale", None)
    return float(scale) if isinstance(scale, (int, float)) else None


__all__ = ["Cancelled", "ProgressEvent", "ResolvedModel", "Video", "VideoPipeline", "load", "resolve_model", "validate_request"]
