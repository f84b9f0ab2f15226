"""The output-folder protocol: reserved names, a video and its sidecar published as one unit,
what counts as done, and the leftovers of killed writers.

**Names.** ``<out>/<YYYY-MM-DD>/<index>-<slug>-s<seed>.mp4`` with its sidecar ``<same>.json``. The
index is the next one that no entry of the day folder uses, hidden entries included.

**Writes in progress.** Every write (a video with its sidecar, or a single file: a frame strip, a
GIF) owns a hidden folder beside its destination, ``.<id>.writing/``, where ``id`` is the index for
names from :func:`reserve` (creating that folder is what reserves the index: ``mkdir`` is atomic)
and the file's name otherwise. It holds ``owner`` (pid and host, for people), on which the writer
keeps an exclusive ``flock`` from creation to the end (ffmpeg, its child, inherits it), and the
temporary files under their final names. Nothing outside that folder is written before a file is
complete, and nothing is ever replaced: files are published with ``link``, which fails when the
name is taken.

**Publishing a pair**, in this order:

1. the MP4 is encoded into the folder: ffmpeg must exit 0 and the file must read back with the
   expected frame count; the sidecar is written beside it; both are fsynced;
2. the sidecar is linked to its final name;
3. the MP4 is linked to its final name;
4. the folder is removed, which ends the write (and releases the lock).

A failure before 3 (an error, disk full, Ctrl-C) removes the sidecar published in 2 and the
folder: no new file is left and no existing one is touched.

**Done.** A video is complete when its MP4 exists, is not empty, and its sidecar (same stem)
exists. The sidecar is published first, so nobody, ``--resume`` or a person, ever sees an MP4
without its sidecar; a sidecar whose MP4 is missing is not done.

**Leftovers.** A write is stale when its ``owner`` lock can be taken: its writer and its ffmpeg are
gone (a free lock proves it; where ``flock`` does not work nothing is ever judged stale).
:func:`remove_stale` deletes a stale write's folder and, when the writer was killed between 2 and
3, the sidecar it had published (recognised as its own by being the same inode as the sidecar still
in its folder), so ``--resume`` makes that video again, once. Only stale writes are touched: never
a live writer's files, never a file cogvid did not write.

**Batch claims**, which let two batches share one folder, are :mod:`cogvid.claims`.

No torch, no typer here.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import errno
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cogvid.errors import CogvidError, GenerationError, UsageError

try:
    import fcntl
except ImportError:  # Windows: no flock; nothing is judged stale, claims are always granted
    fcntl = None  # type: ignore[assignment]

INDEX_DIGITS = 4
WRITING_SUFFIX = ".writing"
OWNER = "owner"
SIDECAR_KEY = "batch_key"
# A writing folder whose owner has not yet written its pid is left alone this long: the gap
# between ``mkdir`` and ``flock`` is microseconds, so only a writer killed inside it is older.
CREATION_GRACE_S = 60.0
PAUSE_ENV = "COGVID_TEST_PAUSE_AT"

_VISIBLE_INDEX_RE = re.compile(r"^(\d+)-")
_HIDDEN_INDEX_RE = re.compile(r"^\.(\d+)[.-]")
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


# ---------------------------------------------------------------------------------------------
# Errors


def exists_error(path: Path) -> UsageError:
    return UsageError(f"{path} already exists; cogvid never overwrites files", hint="choose another output name")


def write_error(error: OSError, path: Path) -> CogvidError:
    """An OSError met while writing ``path``, as the error a user can act on.

    A folder the user may not write to is a bad ``--out``: UsageError (exit 2, like a folder that
    cannot be created). A full disk, a quota or a file-size limit fails this generation's write:
    GenerationError (exit 1).
    """
    folder = path.parent
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UsageError(f"cannot write to {folder}: {error.strerror}", hint="choose a folder you can write to (--out)")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return GenerationError(
            f"cannot write {path}: no space left on the device ({error.strerror})",
            hint=f"free some space where {folder} is, or choose another --out folder",
        )
    if error.errno == errno.EFBIG:
        return GenerationError(
            f"cannot write {path}: file too large (a file-size limit, see ulimit -f)",
            hint="raise the file-size limit or choose another --out folder",
        )
    return GenerationError(f"cannot write {path}: {error.strerror or error}")


# ---------------------------------------------------------------------------------------------
# Locks


def try_lock(fd: int) -> bool | None:
    """Take an exclusive flock without waiting: True taken, False held by someone, None unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EINVAL...: this file system has no flock
        return None
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _age_s(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


def _pause_for_tests(point: str) -> None:
    """Test hook: ``COGVID_TEST_PAUSE_AT=<point>:<folder>`` stops a writer at ``point``.

    It creates ``<folder>/paused-<point>`` (holding its pid) and waits until ``<folder>/go`` exists,
    so a test can kill it there or let it go on. Points: reserved, encoded, sidecar-published, published.
    """
    spec = os.environ.get(PAUSE_ENV)
    if not spec or spec.partition(":")[0] != point:
        return
    folder = Path(spec.partition(":")[2])
    (folder / f"paused-{point}").write_text(str(os.getpid()))
    while not (folder / "go").exists():
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# Writes in progress


class Writing:
    """A write in progress: the hidden folder ``.<id>.writing/`` beside the destination, locked by
    this process until :meth:`close`. ``path`` is the (main) file it will publish."""

    def __init__(self, folder: Path, ident: str, fd: int, path: Path | None = None) -> None:
        self.folder = folder
        self.dir = folder / f".{ident}{WRITING_SUFFIX}"
        self.fd: int | None = fd
        self.path = path or folder / ident
        _LIVE[self.dir] = self

    def temp(self, name: str) -> Path:
        """Where the file that will be published as ``name`` is written first."""
        return self.dir / name

    def publish(self, name: str) -> Path:
        """Link the finished temporary ``name`` to ``<folder>/<name>``; never replaces anything."""
        temp, final = self.dir / name, self.folder / name
        try:
            os.link(temp, final)
        except FileExistsError:
            raise exists_error(final) from None
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
            # No hard links on this file system: rename after checking the name is free (a writer
            # racing for the same name in between could be replaced; names from reserve() cannot).
            if os.path.lexists(final):
                raise exists_error(final) from None
            os.rename(temp, final)
        return final

    def close(self) -> None:
        """End the write: remove the folder (temporaries included), then release the lock."""
        if self.fd is None:
            return
        _LIVE.pop(self.dir, None)
        with contextlib.suppress(OSError):
            for name in os.listdir(self.dir):
                if name != OWNER:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir / name)
        with contextlib.suppress(OSError):
            os.unlink(self.dir / OWNER)  # still locked: nobody can take it for stale meanwhile
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)
        os.close(self.fd)
        self.fd = None


_LIVE: dict[Path, Writing] = {}  # writing folder -> its Writing, for lock_fds_for()
_RESERVED: dict[Path, Writing] = {}  # output_path() names (without suffix) not yet written


def lock_fds_for(path: Path) -> tuple[int, ...]:
    """The lock of the write that owns the temporary ``path``, for a subprocess writing it to inherit."""
    writing = _LIVE.get(Path(path).parent)
    if fcntl is None or writing is None or writing.fd is None:  # no flock (Windows): nothing to inherit
        return ()
    return (writing.fd,)


def _start_writing(folder: Path, ident: str) -> Writing | None:
    """Create and lock ``<folder>/.<ident>.writing``; None when it already exists."""
    directory = folder / f".{ident}{WRITING_SUFFIX}"
    try:
        os.mkdir(directory)
    except FileExistsError:
        return None
    except OSError as e:
        raise write_error(e, directory) from e
    owner = directory / OWNER
    fd = None
    try:
        fd = os.open(owner, os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o644)
        if fcntl is not None:
            with contextlib.suppress(OSError):  # no flock here: the write still works, unprotected
                fcntl.flock(fd, fcntl.LOCK_EX)
        if os.stat(owner).st_ino != os.fstat(fd).st_ino:  # removed as stale before we locked it
            raise FileNotFoundError(owner)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except FileNotFoundError:
        if fd is not None:
            os.close(fd)
        return None
    except BaseException as e:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(owner)
            os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(directory)
        if isinstance(e, OSError):
            raise write_error(e, directory) from e
        raise
    return Writing(folder, ident, fd)


def check_output_folder(out_dir: str | os.PathLike) -> None:
    """UsageError (before any work) when videos cannot be written under ``out_dir``; creates the
    folder (empty) if it is missing, since every way of knowing it can be made is making it."""
    folder = Path(out_dir).expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"cannot write videos to {folder}: {probe} is a file, not a folder", hint="choose another --out folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write videos to {folder}: {e.strerror or e}", hint="choose another --out folder") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write videos to {folder}: it is not writable", hint="choose another --out folder")
    day = folder / _dt.datetime.now().strftime("%Y-%m-%d")
    if day.exists() and not (day.is_dir() and os.access(day, os.W_OK | os.X_OK)):
        raise UsageError(f"cannot write videos to {day}: it is not a writable folder", hint="choose another --out folder")


def make_output_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents): UsageError (exit 2) when impossible, GenerationError on a full disk."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise write_error(e, folder) from e
        raise UsageError(f"cannot create output folder {folder}: {e}", hint="choose another --out folder") from e


def _used_indices(folder: Path, ignore: str = "") -> set[int]:
    used = set()
    for entry in os.listdir(folder):
        match = _VISIBLE_INDEX_RE.match(entry) or _HIDDEN_INDEX_RE.match(entry)
        if match and entry != ignore:
            used.add(int(match.group(1)))
    return used


def reserve(
    out_dir: str | os.PathLike, prompt: str, seed: int, ext: str = "mp4", now: _dt.datetime | None = None
) -> Writing:
    """Start a write of ``<out_dir>/<YYYY-MM-DD>/<index>-<slug>-s<seed>.<ext>`` (its ``path``).

    ``index`` (4 digits, from 0000) is the next number no entry of the day folder uses; it is
    held by this process, against every other, until the write is closed.
    """
    from cogvid.video import slugify

    day = (now or _dt.datetime.now()).strftime("%Y-%m-%d")
    folder = Path(out_dir).expanduser() / day
    make_output_folder(folder)
    name_tail = f"{slugify(prompt)}-s{seed}.{ext.lstrip('.')}"
    index = max(_used_indices(folder), default=-1) + 1
    while True:
        ident = f"{index:0{INDEX_DIGITS}d}"
        writing = _start_writing(folder, ident)
        if writing is None:
            index += 1
            continue
        used = _used_indices(folder, ignore=writing.dir.name)
        if index in used:  # taken by a write that ended between our scan and our mkdir
            writing.close()
            index = max(used) + 1
            continue
        writing.path = folder / f"{ident}-{name_tail}"
        _pause_for_tests("reserved")
        return writing


def output_path(
    out_dir: str | os.PathLike, prompt: str, seed: int, ext: str = "mp4", now: _dt.datetime | None = None
) -> Path:
    """Reserve a name as :func:`reserve` does and return it; the next write to that name (or to its
    sidecar name) by this process uses the reservation. The file itself does not exist yet."""
    writing = reserve(out_dir, prompt, seed, ext, now)
    _RESERVED[_stem_key(writing.path)] = writing
    return writing.path


def _stem_key(path: Path) -> Path:
    return Path(os.path.abspath(path)).with_suffix("")


@atexit.register
def _release_reservations() -> None:
    for writing in list(_RESERVED.values()):
        writing.close()
    _RESERVED.clear()


def _writing_for(final: Path) -> Writing:
    """This process's reservation of ``final``'s name, else a new write named after the file."""
    reserved = _RESERVED.pop(_stem_key(final), None)
    if reserved is not None:
        return reserved
    make_output_folder(final.parent)
    for _ in range(2):
        writing = _start_writing(final.parent, final.name)
        if writing is not None:
            writing.path = final
            return writing
        _clean_writing(final.parent / f".{final.name}{WRITING_SUFFIX}")  # a killed writer's?
    raise UsageError(f"{final} is being written by another process", hint="wait for it, or choose another name")


def _check_free(*paths: Path) -> None:
    for path in paths:
        if os.path.lexists(path):
            raise exists_error(path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for the file ``path``; publish it when the block ends, or remove it
    on any error (KeyboardInterrupt included). ``path`` must not exist: nothing is overwritten."""
    final = Path(path).expanduser()
    try:
        _check_free(final)
    except UsageError:
        _release_reserved(final)
        raise
    writing = _writing_for(final)
    try:
        _check_free(final)
        temp = writing.temp(final.name)
        yield temp
        _fsync(temp)
        writing.publish(final.name)
    except OSError as e:
        raise write_error(e, final) from e
    finally:
        writing.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # (Windows needs write access to flush)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes, shown: Path) -> None:
    """Create ``path`` with ``data`` and fsync it; an OSError is reported as writing ``shown``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise write_error(e, shown) from e


# ---------------------------------------------------------------------------------------------
# Publishing a video with its sidecar


def publish_pair(
    frames: Any, fps: float, metadata: dict, path: str | os.PathLike, quality: float = 5.0
) -> Path:
    """Write uint8 frames (T, H, W, 3) as the MP4 ``path`` and ``metadata`` (plus ``fps`` and
    ``file``) as its sidecar, as one unit (see the module docstring); returns the video path.

    Both names must be free (a name from :func:`output_path` is). On any failure nothing new is
    left and nothing existing touched: UsageError (exit 2) when a name is taken or the folder is
    not writable, GenerationError (exit 1) when ffmpeg fails or the disk is full.
    """
    final = Path(path).expanduser()
    try:
        _check_free(final, final.with_suffix(".json"))  # before anything is written
    except UsageError:
        _release_reserved(final)
        raise
    return _publish_with(_writing_for(final), frames, fps, metadata, final, quality)


def _release_reserved(final: Path) -> None:
    reserved = _RESERVED.pop(_stem_key(final), None)
    if reserved is not None:
        reserved.close()


def publish(
    video: Any, out_dir: str | os.PathLike, prompt: str | None = None, fps: float | None = None,
    now: _dt.datetime | None = None,
) -> Path:
    """Publish a generated :class:`cogvid.pipeline.Video` under a fresh name in ``out_dir`` (the
    one way ``cogvid t2v``, ``batch`` and the REPL write); returns the MP4's path."""
    meta = video.metadata
    prompt = meta.get("prompt", "") if prompt is None else prompt
    day = Path(out_dir).expanduser() / (now or _dt.datetime.now()).strftime("%Y-%m-%d")
    if day.is_dir():
        remove_stale(day, day_folder=True)  # a killed writer's leftovers are replaced, not kept
    writing = reserve(out_dir, prompt, meta.get("seed", 0), now=now)
    return _publish_with(writing, video.frames, fps or video.fps, meta, writing.path, 5.0)


def _publish_with(writing: Writing, frames: Any, fps: float, metadata: dict, final: Path, quality: float) -> Path:
    from cogvid.video import encode_mp4, even_size, sidecar_text

    sidecar = final.with_suffix(".json")
    video_temp, sidecar_temp = writing.temp(final.name), writing.temp(sidecar.name)
    try:
        try:
            _check_free(final, sidecar)
            encode_mp4(even_size(frames, stacklevel=4), video_temp, fps, quality)
            _write_new(sidecar_temp, sidecar_text({**metadata, "fps": fps, "file": final.name}).encode("utf-8"), sidecar)
            _fsync(video_temp)
            _pause_for_tests("encoded")
            writing.publish(sidecar.name)
            _pause_for_tests("sidecar-published")
            writing.publish(final.name)
            _pause_for_tests("published")
        except BaseException:
            # Not a unit yet: take back the sidecar if it was ours and its video is not out.
            if not _same_file(final, video_temp) and _same_file(sidecar, sidecar_temp):
                with contextlib.suppress(OSError):
                    os.unlink(sidecar)
            raise
    except OSError as e:
        raise write_error(e, final) from e
    finally:
        writing.close()
    with contextlib.suppress(OSError):  # make the two names durable
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return final


# ---------------------------------------------------------------------------------------------
# What a folder holds: complete videos, stale writes


def _day_folders(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(entry for entry in out_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def iter_complete_outputs(out_dir: Path) -> Iterator[tuple[str, Path]]:
    """``(batch_key, video)`` for every complete batch output, in name order."""
    for folder in _day_folders(out_dir):
        for sidecar in sorted(folder.glob("*.json")):
            if sidecar.name.startswith("."):
                continue
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(data, dict) or not isinstance(data.get(SIDECAR_KEY), str):
                continue
            name = data.get("file")
            own_name = isinstance(name, str) and "/" not in name and not name.startswith(".")
            video = sidecar.with_name(name) if own_name else sidecar.with_suffix(".mp4")
            try:
                complete = video.is_file() and video.stat().st_size > 0
            except OSError:
                complete = False
            if complete:
                yield data[SIDECAR_KEY], video


def completed_outputs(out_dir: str | os.PathLike) -> dict[str, Path]:
    """``batch_key -> video`` for every complete batch output under ``out_dir/<day>/`` (the done
    rule: a non-empty MP4 beside a sidecar that names it and holds a ``batch_key``)."""
    done: dict[str, Path] = {}
    for key, video in iter_complete_outputs(Path(out_dir).expanduser()):
        done.setdefault(key, video)
    return done


def _clean_writing(directory: Path, remove: bool = True) -> list[Path] | None:
    """If the write ``directory`` is stale, remove it (with ``remove``) and return what it left
    (the folder, and a sidecar published without its video); None while it may be alive."""
    owner = directory / OWNER
    try:
        fd: int | None = os.open(owner, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if _age_s(directory) < CREATION_GRACE_S or not directory.is_dir():
            return None  # being created, or just finished
        fd = None
    except OSError:
        return None
    try:
        if fd is not None:
            if not try_lock(fd):
                return None  # a live writer (or no flock here: cannot prove it dead)
            try:
                if os.stat(owner).st_ino != os.fstat(fd).st_ino:
                    return None  # finished while we looked
            except FileNotFoundError:
                return None
            if os.fstat(fd).st_size == 0 and _age_s(directory) < CREATION_GRACE_S:
                return None  # its writer is between mkdir and writing its pid
        return _remove_writing(directory, remove)
    finally:
        if fd is not None:
            os.close(fd)  # releases our lock


def _remove_writing(directory: Path, remove: bool) -> list[Path]:
    folder = directory.parent
    try:
        names = set(os.listdir(directory)) - {OWNER}
    except OSError:
        names = set()
    found = [directory]
    for name in sorted(names):
        if not name.endswith(".json"):
            continue
        video = name[: -len(".json")] + ".mp4"
        # Killed between publishing the sidecar and the video: the sidecar goes too.
        if video in names and _same_file(directory / name, folder / name):
            if not _same_file(directory / video, folder / video):
                found.append(folder / name)
    if remove:
        for path in found[1:]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
        with contextlib.suppress(OSError):
            os.unlink(directory / OWNER)
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    return found


def _stale_in(out_dir: str | os.PathLike, remove: bool, day_folder: bool = False) -> list[Path]:
    root = Path(out_dir).expanduser()
    folders = [root] if day_folder else _day_folders(root)
    found: list[Path] = []
    for folder in folders:
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in entries:
            if name.startswith(".") and name.endswith(WRITING_SUFFIX) and (folder / name).is_dir():
                found.extend(_clean_writing(folder / name, remove) or [])
    return found


def partial_outputs(out_dir: str | os.PathLike) -> list[Path]:
    """What killed writers left under ``out_dir/<day>/``: their writing folders and any sidecar
    published without its video. A report only: :func:`remove_stale` removes them safely."""
    return _stale_in(out_dir, remove=False)


def remove_stale(out_dir: str | os.PathLike, day_folder: bool = False) -> list[Path]:
    """Remove what killed writers left under ``out_dir/<day>/`` (``out_dir`` itself with
    ``day_folder``); returns the writing folders and orphan sidecars removed. Live writes, of any
    process, are never touched."""
    return _stale_in(out_dir, remove=True, day_folder=day_folder)


@contextlib.contextmanager
def claim_output_folder(out_dir: str | os.PathLike) -> Iterator[list[Path]]:
    """Create ``out_dir`` and remove the leftovers of killed writers there (:func:`remove_stale`);
    yields what was removed. Safe while other processes write to the same folder."""
    folder = Path(out_dir).expanduser()
    make_output_folder(folder)
    yield remove_stale(folder)


__all__ = [
    "SIDECAR_KEY",
    "Writing",
    "atomic_file",
    "claim_output_folder",
    "completed_outputs",
    "iter_complete_outputs",
    "make_output_folder",
    "output_path",
    "partial_outputs",
    "publish",
    "publish_pair",
    "remove_stale",
    "reserve",
    "try_lock",
    "write_error",
]
