"""The VAE's decode schedules: which latent frames each decoder call takes, and how many frames it makes.

Torch-free, so the memory plan (:mod:`cogvid.memory_plan`) can follow a decode before anything loads;
:mod:`cogvid.vae.autoencoder` runs these schedules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cogvid.errors import UsageError, choice_hint

FirstFrame = Literal["odd", "always", "never"]
SCHEDULES = ("1.0", "1.5", "1.5-diffusers", "whole")


def keeps_first_frame(policy: FirstFrame, frames: int) -> bool:
    """Whether the first-frame rule applies to a call with ``frames`` frames under ``policy``."""
    if policy == "odd":
        return frames % 2 == 1
    return policy == "always"


@dataclass(frozen=True)
class DecodeChunk:
    """Latent frames ``[start, end)`` decoded in one decoder call, and its first-frame policy."""

    start: int
    end: int
    first_frame: FirstFrame


def _pairs_with_odd_head(start: int, stop: int) -> list[tuple[int, int]]:
    """Chunks of 2 latents with the remainder added to the first (v1.0 / diffusers)."""
    count = stop - start
    if count <= 2:
        return [(start, stop)]
    head = 2 + count % 2
    bounds = [(start, start + head)]
    bounds += [(begin, begin + 2) for begin in range(start + head, stop, 2)]
    return bounds


def decode_plan(latent_frames: int, schedule: str) -> list[DecodeChunk]:
    """The decoder calls of one inference decode, in order (caches carry between them).

    * ``"1.0"`` (sample_video v1.0 = diffusers ``_decode``): ``[0:3], [3:5], [5:7], ...`` with the
      odd-frame first-frame rule: T latents -> 4T-3 frames (13 -> 49). An even T, which the
      original would truncate, is split like diffusers (``[0:2], [2:4], ...``) -> 4T frames.
    * ``"1.5"`` (SAT HEAD ``decode_first_stage``): drop latent 0, split the other ``n = T-1`` into
      ``min(10, n // 2)`` near-equal chunks (larger ones first), no first-frame rule: 4(T-1)
      frames (22 -> 84).
    * ``"1.5-diffusers"``: what diffusers' 1.5 pipeline does with the same latents: drop latent 0
      and decode the rest like ``"1.0"``, so 22 -> 81 frames. The first frame of the clip is then
      decoded on its own by the first-frame rule, which the SAT HEAD code never activates because
      it forces ``use_cp=False`` at ``cp_size <= 1``; the numbers differ from ``"1.5"`` everywhere.
    * ``"whole"``: one call over all latents (v1.0 ``decode_first_stage``, used by training logs).
      GroupNorm statistics then span the clip, so it differs from any chunked decode; memory
      grows with the clip length.
    """
    if latent_frames < 1:
        raise UsageError(f"cannot decode {latent_frames} latent frames")
    if schedule == "1.0":
        return [DecodeChunk(a, b, "odd") for a, b in _pairs_with_odd_head(0, latent_frames)]
    if schedule == "1.5-diffusers":
        if latent_frames < 2:
            raise UsageError("the 1.5 decode drops latent 0 and needs at least 2 latent frames")
        return [DecodeChunk(a, b, "odd") for a, b in _pairs_with_odd_head(1, latent_frames)]
    if schedule == "1.5":
        remaining = latent_frames - 1
        num_chunks = min(10, remaining // 2)
        if num_chunks < 1:
            raise UsageError(
                f"the CogVideoX 1.5 decode drops latent 0 and needs at least 3 latent frames, found {latent_frames}",
                hint="CogVideoX 1.5 generates an even number of latent frames (e.g. 22 for 81 frames)",
            )
        chunks, start = [], 1
        for index in range(num_chunks):
            size = remaining // num_chunks + (1 if index < remaining % num_chunks else 0)
            chunks.append(DecodeChunk(start, start + size, "never"))
            start += size
        return chunks
    if schedule == "whole":
        return [DecodeChunk(0, latent_frames, "odd")]
    raise UsageError(f"unknown VAE decode schedule {schedule!r}", hint=choice_hint(schedule, SCHEDULES))


def chunk_pixel_frames(latent_frames: int, first_frame: FirstFrame, temporal_levels: int = 2) -> int:
    """Frames the decoder produces for a chunk of ``latent_frames`` latents."""
    frames = latent_frames
    for _ in range(temporal_levels):
        if frames > 1:
            frames = 2 * frames - 1 if keeps_first_frame(first_frame, frames) else 2 * frames
    return frames


__all__ = ["SCHEDULES", "DecodeChunk", "FirstFrame", "chunk_pixel_frames", "decode_plan", "keeps_first_frame"]
