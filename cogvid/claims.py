"""Batch claims: two batches writing to one output folder share its videos, never make one twice.

Each video of a batch has a key (:func:`cogvid.batch.job_key`). Right before making one, a batch
claims its key (:meth:`BatchClaims.take`): ``<out>/.cogvid-claims/<key>.claim`` names the batch's
session, and ``<out>/.cogvid-claims/<session>.session`` is a file on which the batch holds an
exclusive ``flock`` until it ends, so the claims of a killed batch are free again (a free lock
proves its holder gone). Claim files are read and written under a short exclusive ``flock`` on
``<out>/.cogvid-batch.lock``. A key held by another live batch is skipped ("another batch is making
it"); once the claim is ours, the batch checks whether the video was made meanwhile, by the other
batch or an earlier line ("already made"): without ``--resume``, videos that existed when the batch
started do not count (a plain rerun makes them again); with it, every complete video does. A batch
removes its claims and session when it ends, and those of killed batches it finds.

Where ``flock`` does not work (some network file systems, Windows) every key is granted, with a
warning: two batches may then make the same video.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cogvid.errors import CogvidWarning
from cogvid.outputs import iter_complete_outputs, make_output_folder, try_lock, write_error

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

CLAIMS_DIR = ".cogvid-claims"
LOCK_NAME = ".cogvid-batch.lock"


@dataclass(frozen=True)
class Claim:
    """The answer to "may this batch make this video now?"."""

    mine: bool
    reason: str = ""  # why not
    path: Path | None = None  # the video made meanwhile, if that is why


class BatchClaims:
    """One batch's claims on the videos (keys) of an output folder, held until the batch ends.

    ``with BatchClaims(out, resume) as claims: claims.take(key)`` before making each video. Without
    ``resume``, videos that existed when the batch started do not count as made (a plain rerun
    makes them again); with it, every complete video does.
    """

    def __init__(self, out_dir: str | os.PathLike, resume: bool = False) -> None:
        self.out = Path(out_dir).expanduser()
        self.dir = self.out / CLAIMS_DIR
        self.resume = resume
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.shared = False  # False: locks unavailable, every key is granted (videos may be made twice)
        self._lock_fd: int | None = None
        self._session_fd: int | None = None
        self._claimed: list[Path] = []
        self._before: set[Path] = set()

    def __enter__(self) -> BatchClaims:
        make_output_folder(self.out)
        if not self.resume:
            self._before = {video for _, video in iter_complete_outputs(self.out)}
        try:
            self._lock_fd = os.open(self.out / LOCK_NAME, os.O_CREAT | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise write_error(e, self.out / LOCK_NAME) from e
        try:
            with self._folder_lock():
                make_output_folder(self.dir)
                session = self.dir / f"{self.token}.session"
                fd = os.open(session, os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o644)
                if not try_lock(fd):
                    os.close(fd)
                    os.unlink(session)
                    raise _NoLocks
                self._session_fd = fd
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self.shared = True
        except _NoLocks:
            warnings.warn(
                f"cannot lock files in {self.out}: two batches writing there at once may make the same videos",
                CogvidWarning,
                stacklevel=2,
            )
        except OSError as e:
            self.__exit__(None, None, None)
            raise write_error(e, self.dir) from e
        return self

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        """Claims are read and written under an exclusive flock on ``<out>/.cogvid-batch.lock``."""
        if self._lock_fd is None or fcntl is None:
            raise _NoLocks
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as e:
            raise _NoLocks from e
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _alive(self, token: str) -> bool:
        try:
            fd = os.open(self.dir / f"{token}.session", os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return False
        except OSError:
            return True
        try:
            return try_lock(fd) is not True  # taken: its batch is gone; unknown: assume alive
        finally:
            os.close(fd)

    def take(self, key: str) -> Claim:
        """Claim ``key`` for this batch; ``Claim(mine=False, ...)`` when another live batch holds
        it or its video was made meanwhile. Call it right before making the video."""
        if self.shared:
            claim = self.dir / f"{key}.claim"
            with self._folder_lock():
                try:
                    holder = claim.read_text().strip()
                except (FileNotFoundError, UnicodeDecodeError):
                    holder = ""
                if holder != self.token:
                    if holder and self._alive(holder):
                        return Claim(False, "another batch is making it")
                    try:
                        claim.write_text(self.token)
                    except OSError as e:
                        raise write_error(e, claim) from e
                    self._claimed.append(claim)
        for made_key, video in iter_complete_outputs(self.out):
            if made_key == key and video not in self._before:
                return Claim(False, "already made", video)
        return Claim(True)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._session_fd is not None:
                with self._folder_lock():
                    self._release_all()
        finally:
            for name in ("_session_fd", "_lock_fd"):
                fd = getattr(self, name)
                if fd is not None:
                    os.close(fd)
                    setattr(self, name, None)

    def _release_all(self) -> None:
        """Drop this batch's claims and session, and those of killed batches; under the folder lock."""
        for claim in self._claimed:
            with contextlib.suppress(OSError):
                claim.unlink()
        with contextlib.suppress(OSError):
            (self.dir / f"{self.token}.session").unlink()
        with contextlib.suppress(OSError):
            for entry in sorted(self.dir.iterdir()):
                if entry.suffix == ".session" and not self._alive(entry.stem):
                    with contextlib.suppress(OSError):
                        entry.unlink()
            for entry in sorted(self.dir.iterdir()):
                if entry.suffix == ".claim":
                    with contextlib.suppress(OSError, UnicodeDecodeError):
                        holder = entry.read_text().strip()
                        if not holder or not self._alive(holder):
                            entry.unlink()
            self.dir.rmdir()  # when empty


class _NoLocks(Exception):
    """flock does not work on this file system."""


@contextlib.contextmanager
def claim(out_dir: str | os.PathLike, key: str, resume: bool = True) -> Iterator[Claim]:
    """Claim one video key in ``out_dir`` for the duration of the block (see :class:`BatchClaims`)."""
    with BatchClaims(out_dir, resume=resume) as claims:
        yield claims.take(key)


__all__ = ["CLAIMS_DIR", "LOCK_NAME", "BatchClaims", "Claim", "claim"]
