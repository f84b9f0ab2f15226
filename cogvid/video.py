"""Writing results: output names, MP4 (H.264) files, JSON sidecars, frame strips and GIFs.

Every file is written under a temporary name in its destination folder and renamed into place
only when complete, so a reader never sees half a video; nothing existing is ever overwritten.
:func:`output_path` reserves ``<out>/<YYYY-MM-DD>/<index>-<slug>-s<seed>.mp4`` by creating it empty
(``O_EXCL``), which makes names unique across processes (e.g. torchrun ranks) sharing a folder;
the writers then replace that empty placeholder, and only an empty placeholder.

This module imports neither torch nor imageio at import time.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import unicodedata
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cogvid.errors import CogvidWarning, GenerationError, MissingFileError, UsageError

SLUG_MAX = 48
INDEX_DIGITS = 4
_INDEX_RE = re.compile(r"^(\d+)-")


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


def _used_indices(folder: Path) -> set[int]:
    used = set()
    for entry in os.listdir(folder):
        match = _INDEX_RE.match(entry)
        if match:
            used.add(int(match.group(1)))
    return used


def _create_exclusive(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def check_output_folder(out_dir: str | os.PathLike) -> None:
    """UsageError (before any work) when videos cannot be written under ``out_dir``; creates nothing."""
    folder = Path(out_dir).expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"cannot write videos to {folder}: {probe} is a file, not a folder", hint="choose another --out folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write videos to {folder}: {probe} is not writable", hint="choose another --out folder")
    day = folder / _dt.datetime.now().strftime("%Y-%m-%d")
    if day.exists() and not (day.is_dir() and os.access(day, os.W_OK | os.X_OK)):
        raise UsageError(f"cannot write videos to {day}: it is not a writable folder", hint="choose another --out folder")


def output_path(
    out_dir: str | os.PathLike, prompt: str, seed: int, ext: str = "mp4", now: _dt.datetime | None = None
) -> Path:
    """Reserve and return ``<out_dir>/<YYYY-MM-DD>/<index>-<slug>-s<seed>.<ext>``.

    ``index`` (4 digits, from 0000) is the next number not used by any file in the day folder.
    The returned file exists, empty: it is the reservation the writers replace. Safe against
    other processes reserving in the same folder at the same time.
    """
    day = (now or _dt.datetime.now()).strftime("%Y-%m-%d")
    folder = Path(out_dir).expanduser() / day
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {folder}: {e}", hint="choose another --out folder") from e
    name_tail = f"{slugify(prompt)}-s{seed}.{ext.lstrip('.')}"
    index = max(_used_indices(folder), default=-1) + 1
    while True:
        # A per-index lock: only its holder may claim `index`; it re-checks the folder while
        # holding it, so a reservation made since the scan above is seen.
        lock = folder / f".{index:0{INDEX_DIGITS}d}.reserving"
        if not _create_exclusive(lock):
            index += 1
            continue
        try:
            if index in _used_indices(folder):
                index = max(_used_indices(folder)) + 1
                continue
            path = folder / f"{index:0{INDEX_DIGITS}d}-{name_tail}"
            if _create_exclusive(path):
                return path
            index += 1
        finally:
            lock.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Atomic, never-overwriting publication


def _temp_path(path: Path) -> Path:
    # Keep the extension last: ffmpeg picks the container from it.
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def _exists_error(path: Path) -> UsageError:
    return UsageError(f"{path} already exists; cogvid never overwrites files", hint="choose another output name")


def _publish(temp: Path, path: Path) -> None:
    """Move the finished ``temp`` to ``path``; ``path`` may only be absent or an empty reservation."""
    if path.exists():
        if path.is_file() and path.stat().st_size == 0:
            os.replace(temp, path)  # our own reservation from output_path()
            return
        raise _exists_error(path)
    try:
        os.link(temp, path)  # atomic and fails if `path` appeared meanwhile
    except FileExistsError as e:
        raise _exists_error(path) from e
    except OSError:
        os.replace(temp, path)  # file systems without hard links
        return
    temp.unlink()


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; publish it on success, delete it (and an empty
    reservation of ``path``) on any error, KeyboardInterrupt included."""
    final = Path(path).expanduser()
    if final.exists() and not (final.is_file() and final.stat().st_size == 0):
        raise _exists_error(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create folder {final.parent}: {e}") from e
    reserved = final.exists()
    temp = _temp_path(final)
    try:
        yield temp
        _publish(temp, final)
    except BaseException:
        if reserved and final.is_file() and final.stat().st_size == 0:
            final.unlink()  # give the reserved name back: no empty video is left behind
        raise
    finally:
        temp.unlink(missing_ok=True)


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


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float, quality: float = 5.0) -> Path:
    """Write uint8 frames (T, H, W, 3) as an H.264 (libx264, yuv420p) MP4 that browsers play.

    Any even size is kept exactly (``macro_block_size=1``: no rescaling to multiples of 16).
    yuv420p cannot store an odd width or height: such frames get one replicated edge row/column,
    with a warning. ``quality`` is imageio's 0-10 scale (5, the original's default, is CRF 25;
    10 is CRF 0). ``+faststart`` puts the index first so playback starts while loading.
    """
    import imageio_ffmpeg

    array = _check_frames(frames)
    if fps <= 0:
        raise UsageError(f"fps must be positive, found {fps}")
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        warnings.warn(
            f"H.264/yuv420p needs an even size; padding {array.shape[1]}x{array.shape[2]} frames by "
            f"replicating the last {'row' if pad_h else ''}{' and ' if pad_h and pad_w else ''}"
            f"{'column' if pad_w else ''}",
            CogvidWarning,
            stacklevel=2,
        )
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    height, width = array.shape[1], array.shape[2]
    with _atomic_target(path) as temp:
        writer = imageio_ffmpeg.write_frames(
            str(temp),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=quality,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )
        try:
            writer.send(None)  # start ffmpeg
            for frame in array:
                writer.send(np.ascontiguousarray(frame))
        except (OSError, RuntimeError) as e:
            raise GenerationError(f"ffmpeg failed while writing {path}: {e}") from e
        finally:
            writer.close()
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


def write_sidecar(path: str | os.PathLike, metadata: dict) -> Path:
    """Write ``metadata`` as JSON beside the video ``path`` (``.json`` suffix), atomically."""
    target = sidecar_path(path)
    text = json.dumps(metadata, indent=2, ensure_ascii=False, default=_jsonable) + "\n"
    with _atomic_target(target) as temp:
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
    with _atomic_target(path) as temp:
        image.save(temp, format="PNG")
    return Path(path).expanduser()


def write_gif(frames: np.ndarray, path: str | os.PathLike, fps: float) -> Path:
    """An animated GIF (looping) of uint8 frames (T, H, W, 3); frame time rounds to 10 ms."""
    from PIL import Image

    array = _check_frames(frames)
    if fps <= 0:
        raise UsageError(f"fps must be positive, found {fps}")
    images = [Image.fromarray(frame) for frame in array]
    with _atomic_target(path) as temp:
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
