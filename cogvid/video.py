"""Writing results: output names, MP4 (H.264) files, JSON sidecars, frame strips and GIFs.

Every file is written under a temporary name and published only when complete, and nothing existing
is ever overwritten; a video and its sidecar appear together. The protocol behind this (reserved
names, writes in progress, what counts as done, leftovers of killed writers, batch claims) is
:mod:`cogvid.outputs`; this module encodes and formats.

This module imports neither torch nor imageio at import time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import subprocess
import unicodedata
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from cogvid.errors import CogvidWarning, GenerationError, MissingFileError, UsageError

SLUG_MAX = 48


# ---------------------------------------------------------------------------------------------
# Names


def slugify(prompt: str, max_length: int = SLUG_MAX) -> str:
    """Lowercase ASCII words joined by dashes, at most ``max_length`` characters ("video" if empty)."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_length:
        cut = slug[:max_length]
        # Prefer ending on a whole word when one ends in the second half.
        slug = cut.rsplit("-", 1)[0] if "-" in cut[max_length // 2 :] else cut
    return slug.strip("-") or "video"


def output_path(
    out_dir: str | os.PathLike, prompt: str, seed: int, ext: str = "mp4", now: _dt.datetime | None = None
) -> Path:
    """Reserve and return ``<out_dir>/<YYYY-MM-DD>/<index>-<slug>-s<seed>.<ext>``.

    ``index`` (4 digits, from 0000) is the next number not used in the day folder; this process
    holds it against every other until it writes that name (see :func:`cogvid.outputs.output_path`).
    """
    from cogvid.outputs import output_path as reserve_name

    return reserve_name(out_dir, prompt, seed, ext, now)


# ---------------------------------------------------------------------------------------------
# Frames


def frames_to_uint8(frames: Any) -> np.ndarray:
    """Decoded frames in [-1, 1] -> uint8 with channels last, exactly as the original.

    (F, 3, H, W) -> (F, H, W, 3); (B, F, 3, H, W) -> (B, F, H, W, 3). The original computes, in
    float32, ``clamp((x + 1) / 2, 0, 1) * 255`` and TRUNCATES (``astype(uint8)``): no rounding.
    Accepts a torch tensor (any device/dtype) or a numpy array.
    """
    if hasattr(frames, "detach"):  # torch.Tensor, without importing torch here
        import torch

        x = frames.detach().to(device="cpu", dtype=torch.float32)
        x = torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0)
        x = (255.0 * x).numpy()
    else:
        x = np.asarray(frames, dtype=np.float32)
        x = np.clip((x + np.float32(1.0)) / np.float32(2.0), np.float32(0.0), np.float32(1.0))
        x = np.float32(255.0) * x
    if x.ndim not in (4, 5) or x.shape[-3] != 3:
        raise ValueError(f"expected frames shaped (F, 3, H, W) or (B, F, 3, H, W), got {tuple(x.shape)}")
    x = np.moveaxis(x, -3, -1)  # (..., F, 3, H, W) -> (..., F, H, W, 3)
    return np.ascontiguousarray(x).astype(np.uint8)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"expected uint8 frames shaped (T, H, W, 3), got {array.dtype} {array.shape}")
    return array


# ---------------------------------------------------------------------------------------------
# Writers


def even_size(frames: np.ndarray, stacklevel: int = 2) -> np.ndarray:
    """Checked uint8 frames (T, H, W, 3), with one replicated edge row/column added where the height
    or width is odd (yuv420p cannot store it), with a warning."""
    array = _check_frames(frames)
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        warnings.warn(
            f"H.264/yuv420p needs an even size; padding {array.shape[1]}x{array.shape[2]} frames by "
            f"replicating the last {'row' if pad_h else ''}{' and ' if pad_h and pad_w else ''}"
            f"{'column' if pad_w else ''}",
            CogvidWarning,
            stacklevel=stacklevel + 1,
        )
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return array


def _describe_exit(returncode: int) -> str:
    """``1`` -> ``exit status 1``; ``-25`` -> ``signal SIGXFSZ``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def _run_ffmpeg(command: list[str], data: memoryview, keep_fds: tuple[int, ...]) -> tuple[int, str]:
    """Run ffmpeg with ``data`` on stdin; (exit status, the end of its stderr).

    It runs in its own session, so a Ctrl-C meant for cogvid does not cut the file short behind
    our back; on any error here (KeyboardInterrupt included) it is killed and waited for.
    """
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, pass_fds=keep_fds,
    )
    try:
        _, stderr = process.communicate(input=data)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process.returncode, stderr.decode("utf-8", "replace")[-2000:].strip()


def encode_mp4(frames: np.ndarray, path: Path, fps: float, quality: float = 5.0) -> None:
    """Encode uint8 frames (T, H, W, 3), H and W even, as the H.264 MP4 ``path`` (a new file).

    GenerationError unless ffmpeg exits 0 and ``path`` reads back with T frames: a full disk or a
    file-size limit never passes for a video. libx264, yuv420p, ``+faststart``; ``quality`` is
    imageio's 0-10 scale (5 is CRF 25, 10 is CRF 0).
    """
    import imageio_ffmpeg

    from cogvid.outputs import lock_fds_for

    if fps <= 0:
        raise UsageError(f"fps must be positive, found {fps}")
    if not 0 <= quality <= 10:
        raise UsageError(f"quality must be between 0 and 10, found {quality}")
    count, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-n", "-f", "rawvideo", "-vcodec", "rawvideo",
        "-s", f"{width}x{height}", "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()),
        "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(int((1 - quality / 10) * 51)),
        "-v", "error", "-movflags", "+faststart", str(path),
    ]
    data = memoryview(np.ascontiguousarray(frames)).cast("B")  # (T, H, W, 3) -> T*H*W*3 bytes, no copy
    # ffmpeg inherits the write's lock: its file is not a leftover while it runs, even if we die.
    returncode, stderr = _run_ffmpeg(command, data, lock_fds_for(path))
    if returncode != 0:
        full = "No space left" in stderr or "Disk quota" in stderr or returncode == -getattr(signal, "SIGXFSZ", 0)
        raise GenerationError(
            f"ffmpeg failed writing {path.name} ({_describe_exit(returncode)})" + (f": {stderr}" if stderr else ""),
            hint="free some disk space (or raise the file-size limit) and retry" if full else None,
        )
    try:
        written, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, ValueError) as e:
        raise GenerationError(f"ffmpeg wrote an unreadable video {path.name}: {str(e)[-500:]}") from e
    if written != count:
        raise GenerationError(f"ffmpeg wrote {written} of {count} frames to {path.name}")


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float, quality: float = 5.0) -> Path:
    """Write uint8 frames (T, H, W, 3) as an H.264 (libx264, yuv420p) MP4 that browsers play.

    Any even size is kept exactly (no rescaling to multiples of 16). yuv420p cannot store an odd
    width or height: such frames get one replicated edge row/column, with a warning. ``quality``
    is imageio's 0-10 scale (5, the original's default, is CRF 25; 10 is CRF 0). ``+faststart``
    puts the index first so playback starts while loading. The file is published only once ffmpeg
    exited 0 and it reads back whole; ``path`` must not exist.
    """
    from cogvid.outputs import atomic_file

    array = even_size(frames)
    if fps <= 0:
        raise UsageError(f"fps must be positive, found {fps}")
    with atomic_file(path) as temp:
        encode_mp4(array, temp, fps, quality)
    return Path(path).expanduser()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # torch tensors and scalars
        return value.tolist()
    return str(value)


def sidecar_path(video_path: str | os.PathLike) -> Path:
    """``<video>.json`` beside the video (same stem)."""
    return Path(video_path).expanduser().with_suffix(".json")


def sidecar_text(metadata: dict) -> str:
    """The sidecar's JSON text (numpy and torch values, paths and dates made plain)."""
    return json.dumps(metadata, indent=2, ensure_ascii=False, default=_jsonable) + "\n"


def write_sidecar(path: str | os.PathLike, metadata: dict) -> Path:
    """Write ``metadata`` as JSON beside the video ``path`` (``.json`` suffix), atomically.

    A video with its sidecar is better written as a unit: :func:`cogvid.outputs.publish_pair`."""
    from cogvid.outputs import atomic_file

    target = sidecar_path(path)
    text = sidecar_text(metadata)
    with atomic_file(target) as temp:
        temp.write_text(text, encoding="utf-8")
    return target


def _evenly_spaced(count: int, n: int) -> list[int]:
    if n >= count:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, n)})


def save_frame_strip(frames: np.ndarray, path: str | os.PathLike, n: int = 8, height: int | None = None) -> Path:
    """A PNG of ``n`` evenly spaced frames side by side (first and last included).

    ``height`` scales every frame to that many pixels high (LANCZOS), keeping the aspect ratio.
    """
    from PIL import Image

    array = _check_frames(frames)
    if n < 1:
        raise UsageError(f"a frame strip needs at least one frame, asked for {n}")
    picked = array[_evenly_spaced(array.shape[0], n)]
    strip = np.concatenate(list(picked), axis=1)  # (n, H, W, 3) -> (H, n*W, 3)
    image = Image.fromarray(strip)
    if height is not None and height != array.shape[1]:
        width = max(1, round(image.width * height / image.height))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    from cogvid.outputs import atomic_file

    with atomic_file(path) as temp:
        image.save(temp, format="PNG")
    return Path(path).expanduser()


def write_gif(frames: np.ndarray, path: str | os.PathLike, fps: float) -> Path:
    """An animated GIF (looping) of uint8 frames (T, H, W, 3); frame time rounds to 10 ms."""
    from PIL import Image

    array = _check_frames(frames)
    if fps <= 0:
        raise UsageError(f"fps must be positive, found {fps}")
    images = [Image.fromarray(frame) for frame in array]
    from cogvid.outputs import atomic_file

    with atomic_file(path) as temp:
        images[0].save(
            temp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
    return Path(path).expanduser()


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a video back: (uint8 frames (T, H, W, 3), fps)."""
    import imageio_ffmpeg

    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingFileError(f"video not found: {file}")
    reader = imageio_ffmpeg.read_frames(str(file), pix_fmt="rgb24")
    meta = reader.__next__()
    width, height = meta["size"]
    frames = [np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3) for raw in reader]  # bytes -> (H, W, 3)
    # T frames of (H, W, 3) -> (T, H, W, 3)
    return np.stack(frames), float(meta["fps"])
