"""What a model can make (frame counts, sizes, defaults), read from its configuration and checked before any heavy work.

Frame counts and sizes follow each CogVideoX generation (REFERENCE §2, §7):
- 1.0 (2B, 5B, 5B-I2V): 8k+1 pixel frames (latents (F-1)/4+1, odd), at most the table size of the
  config (49 frames); the size is fixed to the config's latent grid (480x720 for released models).
- 1.5: 16k+1 pixel frames (81, 161); one padding latent is added (81 -> 22 latents); sizes are
  multiples of 16 up to the RoPE table (8 x latent_height x latent_width of the config).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from cogvid.errors import UsageError

TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8


class Generation(str, Enum):
    """A CogVideoX release family: it decides frame rules, image preprocessing and the VAE decode."""

    V1_0 = "1.0"  # CogVideoX-2B, -5B, -5B-I2V
    V1_5 = "1.5"  # CogVideoX1.5-5B, -5B-I2V

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of_patch_size(cls, patch_size: Any) -> Generation:
        """1.0 DiTs have an int patch size; 1.5 DiTs a (time, height, width) patch."""
        return cls.V1_0 if isinstance(patch_size, int) else cls.V1_5


@dataclass(frozen=True)
class ModelSpec:
    """Facts about a model that decide which requests are valid (read from its merged config)."""

    generation: Generation
    task: str  # "t2v" or "i2v"
    max_frames: int  # pixel frames
    latent_height: int  # the config's latent grid (the training size for 1.0)
    latent_width: int
    fixed_size: bool
    default_height: int
    default_width: int
    default_frames: int
    fps: int
    scale_factor: float
    latent_channels: int
    model_dtype: str  # fp16 / bf16 / fp32: what the released weights run in

    @property
    def frame_step(self) -> int:
        return 8 if self.generation is Generation.V1_0 else 16

    def latent_frames(self, pixel_frames: int) -> int:
        """Latent frames the sampler works on for ``pixel_frames`` (1.5 adds one padding latent)."""
        latents = (pixel_frames - 1) // TEMPORAL_COMPRESSION + 1
        return latents if self.generation is Generation.V1_0 else latents + 1

    def valid_frames(self) -> list[int]:
        return list(range(self.frame_step + 1, self.max_frames + 1, self.frame_step))

    def decode_schedule(self, original_frames: bool = True) -> str | None:
        """The VAE decode schedule for ``--original-frames`` (None: the model's own, as the original)
        or ``--diffusers-frames`` ("1.5-diffusers": 81 frames for 81 on 1.5; 1.0 decodes alike)."""
        return None if self.generation is Generation.V1_0 or original_frames else "1.5-diffusers"


def spec_from_config(cfg: Any, task: str | None = None, default_fps: int | None = None) -> ModelSpec:
    """Derive a ModelSpec from a merged ``{model, args}`` config."""
    net = cfg.model.network_config.params
    patch = net.patch_size
    generation = Generation.of_patch_size(patch)
    args = cfg.get("args", {}) or {}
    if task is None:
        task = "i2v" if args.get("image2video", False) or int(net.in_channels) > int(net.out_channels) else "t2v"
    latent_h, latent_w = int(net.latent_height), int(net.latent_width)
    num_frames = int(net.num_frames)
    if generation is Generation.V1_0:
        max_frames = num_frames
        default_frames = (int(args.get("sampling_num_frames", (num_frames - 1) // 4 + 1)) - 1) * 4 + 1
        default_h, default_w = latent_h * SPATIAL_COMPRESSION, latent_w * SPATIAL_COMPRESSION
    else:
        max_frames = 2 * (num_frames - 1) + 1  # the config's 81 "for 5 seconds and 161 for 10 seconds"
        latents = int(args.get("sampling_num_frames", (num_frames - 1) // 4 + 2))
        default_frames = (latents - 2) * 4 + 1
        size = args.get("sampling_image_size") or [latent_h * SPATIAL_COMPRESSION, latent_w * SPATIAL_COMPRESSION]
        default_h, default_w = int(size[0]), int(size[1])
    if args.get("fp16", False):
        model_dtype = "fp16"
    elif args.get("bf16", False):
        model_dtype = "bf16"
    else:
        model_dtype = "fp32"
    return ModelSpec(
        generation=generation,
        task=task,
        max_frames=max_frames,
        latent_height=latent_h,
        latent_width=latent_w,
        fixed_size=generation is Generation.V1_0,
        default_height=default_h,
        default_width=default_w,
        default_frames=default_frames,
        fps=int(args.get("sampling_fps") or default_fps or 8),  # the config (registry defaults < YAMLs < --set) wins
        scale_factor=float(cfg.model.scale_factor),
        latent_channels=int(net.out_channels),
        model_dtype=model_dtype,
    )


def _nearest(value: int, allowed: list[int]) -> list[int]:
    ranked = sorted(allowed, key=lambda a: (abs(a - value), a))
    return sorted(ranked[:2])


def check_frames(spec: ModelSpec, frames: int) -> None:
    """A UsageError naming the nearest valid counts when ``frames`` does not fit the model."""
    allowed = spec.valid_frames()
    if frames in allowed:
        return
    nearest = " or ".join(str(f) for f in _nearest(frames, allowed))
    rule = f"{spec.frame_step}k+1 frames, at most {spec.max_frames}"
    raise UsageError(
        f"this model cannot make {frames} frames: CogVideoX {spec.generation} models take {rule}",
        hint=f"use --frames {nearest}",
    )


def check_size(spec: ModelSpec, height: int, width: int) -> None:
    """A UsageError naming the nearest valid size when ``height`` x ``width`` does not fit the model."""
    fixed_h, fixed_w = spec.latent_height * SPATIAL_COMPRESSION, spec.latent_width * SPATIAL_COMPRESSION
    if spec.fixed_size:
        if (height, width) != (fixed_h, fixed_w):
            raise UsageError(
                f"this model generates {fixed_h}x{fixed_w} (HxW) only, not {height}x{width}: CogVideoX 1.0 "
                "position tables are built for that grid",
                hint=f"use --size {fixed_h}x{fixed_w} (or leave --size out)",
            )
        return
    problems = []
    if height % 16 or width % 16:
        problems.append("height and width must be multiples of 16")
    if height < 16 or width < 16:
        problems.append("height and width must be at least 16")
    if height > fixed_h or width > fixed_w:
        problems.append(f"the largest size is {fixed_h}x{fixed_w}")
    if problems:
        near_h = min(max(16, round(height / 16) * 16), fixed_h)
        near_w = min(max(16, round(width / 16) * 16), fixed_w)
        raise UsageError(
            f"size {height}x{width} does not fit this model: {'; '.join(problems)}",
            hint=f"use --size {near_h}x{near_w}",
        )


def parse_size(text: str) -> tuple[int, int]:
    """``480x720`` (height x width) -> (480, 720)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise UsageError(f"bad size {text!r}", hint="write HEIGHTxWIDTH, e.g. --size 480x720")
    return int(parts[0]), int(parts[1])
