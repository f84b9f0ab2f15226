"""A video and its sidecar are published as a unit, only when whole; failures and kills leave no
half-file and never touch an existing one. Library level: no model (fast)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from fixtures.writers import WRITER, gradient, start, tree, wait_for

import cogvid.outputs as outputs
import cogvid.video as video_module
from cogvid.claims import BatchClaims, Claim
from cogvid.errors import GenerationError, UsageError
from cogvid.outputs import (
    completed_outputs,
    output_path,
    partial_outputs,
    publish_pair,
    remove_stale,
    reserve,
    write_error,
)
from cogvid.video import read_video


def _save(path, frames=None, metadata=None):
    return publish_pair(gradient() if frames is None else frames, 8, metadata or {"prompt": "p"}, path)


# --- fault 4: Video.save checks both names first and never replaces a file ----------------------


def test_save_leaves_nothing_when_the_sidecar_name_is_taken(tmp_path):
    from cogvid.pipeline import Video

    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UsageError, match="x.json already exists"):
        Video(frames=gradient(), fps=8, metadata={"prompt": "p"}).save(tmp_path / "x.mp4")
    assert tree(tmp_path) == ["x.json"] and (tmp_path / "x.json").read_text() == "{}"


def test_save_never_replaces_an_empty_file(tmp_path):
    from cogvid.pipeline import Video

    empty = tmp_path / "y.mp4"
    empty.write_bytes(b"")  # a user's file (only cogvid's own reservations are ever written to)
    inode = empty.stat().st_ino
    with pytest.raises(UsageError, match="y.mp4 already exists"):
        Video(frames=gradient(), fps=8, metadata={"prompt": "p"}).save(empty)
    assert empty.stat().st_ino == inode and empty.stat().st_size == 0
    assert tree(tmp_path) == ["y.mp4"]


def test_a_name_taken_while_encoding_takes_back_the_published_sidecar(tmp_path, monkeypatch):
    real_pause = outputs._pause_for_tests

    def someone_else_writes_the_video_name(point):
        real_pause(point)
        if point == "sidecar-published":
            (tmp_path / "z.mp4").write_bytes(b"theirs")

    monkeypatch.setattr(outputs, "_pause_for_tests", someone_else_writes_the_video_name)
    with pytest.raises(UsageError, match="z.mp4 already exists"):
        _save(tmp_path / "z.mp4")
    assert tree(tmp_path) == ["z.mp4"] and (tmp_path / "z.mp4").read_bytes() == b"theirs"


def test_a_pair_reads_back_and_its_sidecar_names_it(tmp_path):
    path = output_path(tmp_path, "a pair", 3)
    assert _save(path, metadata={"prompt": "a pair", "seed": 3}) == path
    frames, fps = read_video(path)
    assert frames.shape == (9, 48, 64, 3) and fps == 8
    assert json.loads(path.with_suffix(".json").read_text()) == {"prompt": "a pair", "seed": 3, "fps": 8, "file": path.name}
    assert tree(tmp_path) == sorted([path.parent.name, f"{path.parent.name}/{path.name}", f"{path.parent.name}/{path.stem}.json"])


# --- fault 4: disk full / unwritable: a clean error, never exit 70 -----------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the sidecar's descriptor through /proc")
def test_disk_full_while_writing_the_sidecar_leaves_nothing(tmp_path, monkeypatch):
    real_write = os.write

    def disk_full_for_sidecars(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if target.endswith(".json") and ".writing/" in target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", disk_full_for_sidecars)
    path = output_path(tmp_path, "disk full", 1)
    with pytest.raises(GenerationError, match="no space left") as raised:
        _save(path)
    assert raised.value.exit_code == 1 and "free some space" in raised.value.hint
    assert path.with_suffix(".json").name in raised.value.message
    assert tree(tmp_path) == [path.parent.name]  # the day folder, empty: no MP4 without its sidecar


@pytest.mark.parametrize(
    "code, kind, exit_code",
    [(errno.ENOSPC, GenerationError, 1), (errno.EDQUOT, GenerationError, 1), (errno.EFBIG, GenerationError, 1),
     (errno.EACCES, UsageError, 2), (errno.EROFS, UsageError, 2), (errno.EIO, GenerationError, 1)],
)
def test_write_errors_are_cogvid_errors(tmp_path, code, kind, exit_code):
    error = write_error(OSError(code, os.strerror(code)), tmp_path / "x.mp4")
    assert type(error) is kind and error.exit_code == exit_code


def test_an_output_folder_that_cannot_exist_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UsageError, match="cannot create output folder") as raised:
        output_path(tmp_path / "file" / "out", "p", 0)
    assert raised.value.exit_code == 2


# --- fault 2: ffmpeg's exit status and the file it wrote are checked ----------------------------


def test_a_video_with_missing_frames_is_not_published(tmp_path, monkeypatch):
    real_run = video_module._run_ffmpeg

    def drops_the_last_frame(command, data, keep_fds):
        return real_run(command, data[: len(data) * 8 // 9], keep_fds)  # ffmpeg exits 0 with 8 frames

    monkeypatch.setattr(video_module, "_run_ffmpeg", drops_the_last_frame)
    with pytest.raises(GenerationError, match="wrote 8 of 9 frames"):
        _save(tmp_path / "short.mp4")
    assert tree(tmp_path) == []


def test_a_truncated_video_is_not_published(tmp_path, monkeypatch):
    real_run = video_module._run_ffmpeg

    def cut_short(command, data, keep_fds):
        result = real_run(command, data, keep_fds)
        os.truncate(command[-1], 1024)  # what a full disk under a lax muxer could leave
        return result

    monkeypatch.setattr(video_module, "_run_ffmpeg", cut_short)
    with pytest.raises(GenerationError, match="unreadable video"):
        _save(tmp_path / "cut.mp4")
    assert tree(tmp_path) == []


def _file_size_limit():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_file_size_limit_fails_the_write(tmp_path):
    writer = start(["-c", WRITER, tmp_path, "key"], preexec_fn=_file_size_limit)
    _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == 1 and "GenerationError" in stderr and "ffmpeg failed" in stderr, stderr[-2000:]
    assert [p for p in tree(tmp_path) if "/" in p] == []  # nothing in the day folder


# --- fault 3: a kill at any point leaves a state readers understand and cleanup repairs --------


@pytest.fixture(scope="module")
def killed_writers(tmp_path_factory):
    """One writer process per dangerous point, each stopped there, checked alive, then SIGKILLed.
    Returns {point: (out folder, what remove_stale() found while it was alive)}."""
    points = ("reserved", "encoded", "sidecar-published", "published")
    root = tmp_path_factory.mktemp("killed")
    running = {}
    for point in points:
        out, pause = root / point, root / f"{point}-pause"
        pause.mkdir()
        running[point] = (out, pause, start(["-c", WRITER, out, f"key-{point}"], pause_at=point, pause_dir=pause))
    result = {}
    for point, (out, pause, writer) in running.items():
        wait_for(pause / f"paused-{point}", writer)
        removed_while_alive = remove_stale(out)  # a live writer's files are never touched
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
        result[point] = (out, removed_while_alive)
    return result


@pytest.mark.parametrize("point", ["reserved", "encoded", "sidecar-published", "published"])
def test_a_killed_write_is_never_done_by_halves(killed_writers, point):
    out, removed_while_alive = killed_writers[point]
    assert removed_while_alive == []
    day = next(out.iterdir())
    visible = sorted(p.name for p in day.iterdir() if not p.name.startswith("."))
    stale = partial_outputs(out)
    assert stale and stale[0].name == ".0000.writing"
    if point == "published":  # both names out: a complete video, only the write folder is left
        assert visible == ["0000-killed-writer-s5.json", "0000-killed-writer-s5.mp4"]
        assert completed_outputs(out) == {"key-published": day / "0000-killed-writer-s5.mp4"}
        assert read_video(day / "0000-killed-writer-s5.mp4")[0].shape[0] == 9
        kept = visible
    elif point == "sidecar-published":  # the sidecar alone: not done, and recognised as an orphan
        assert visible == ["0000-killed-writer-s5.json"]
        assert completed_outputs(out) == {}
        assert stale[1:] == [day / "0000-killed-writer-s5.json"]
        kept = []
    else:
        assert visible == [] and completed_outputs(out) == {}
        kept = []
    assert remove_stale(out) == stale
    assert sorted(p.name for p in day.iterdir()) == kept  # no write folder, no orphan
    if point != "published":  # the reserved index is free again
        again = reserve(out, "next", 0)
        assert again.path.name == "0000-next-s0.mp4"
        again.close()


# --- fault 4 for real: a full tmpfs, where user namespaces allow mounting one ---------------------


NAMESPACE_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    import numpy as np
    from cogvid.errors import CogvidError
    from cogvid.outputs import publish_pair
    frames = np.random.default_rng(0).integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)  # ~40 KB as H.264
    mount, results = sys.argv[1], []
    for size_kb in range(4, 68, 4):  # one page more each time: every step of a write meets a full disk
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "none", mount], check=True)
        with open(os.path.join(mount, "keep.txt"), "w") as keep:
            keep.write("a user's file")
        try:
            publish_pair(frames, 8, {"prompt": "p"}, os.path.join(mount, "x.mp4"))
            outcome = {"ok": True}
        except CogvidError as e:
            outcome = {"ok": False, "kind": type(e).__name__, "exit": e.exit_code, "message": e.message}
        outcome["files"] = sorted(os.path.relpath(os.path.join(d, f), mount) for d, dirs, fs in os.walk(mount)
                                  for f in fs + dirs)
        outcome["keep"] = open(os.path.join(mount, "keep.txt")).read()
        results.append(outcome)
        subprocess.run(["umount", mount], check=True)
    print(json.dumps(results))
    """
)


def _can_mount_a_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs none /mnt 2>/dev/null || mount -t tmpfs none /tmp"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_a_tmpfs(), reason="needs unshare and user namespaces to mount a small tmpfs")
def test_a_full_disk_leaves_no_half_file_and_touches_nothing(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    run = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", NAMESPACE_SCRIPT, str(mount)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout)
    for outcome in results:
        assert outcome["keep"] == "a user's file"
        if outcome["ok"]:
            assert outcome["files"] == ["keep.txt", "x.json", "x.mp4"]
        else:
            assert outcome["kind"] == "GenerationError" and outcome["exit"] == 1, outcome
            assert outcome["files"] == ["keep.txt"], outcome  # nothing new, not even a write folder
    assert not results[0]["ok"] and results[-1]["ok"]  # the sizes span failure and success
    # The case that left an MP4 without its sidecar: the video fits, its sidecar does not.
    assert any("x.json" in outcome.get("message", "") for outcome in results), results


# --- fault 5, in one process: claims --------------------------------------------------------------

CLAIM_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from cogvid.claims import BatchClaims
    claims = BatchClaims(sys.argv[1]).__enter__()
    assert claims.take("k").mine
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_claims_one_batch_per_video_and_a_killed_batch_frees_its_own(tmp_path):
    out = tmp_path / "out"
    with BatchClaims(out) as first, BatchClaims(out, resume=True) as second:
        assert first.shared and first.take("a").mine and first.take("a").mine  # again: still ours
        busy = second.take("a")
        assert not busy.mine and busy.reason == "another batch is making it"
        assert second.take("b").mine and not first.take("b").mine
    assert tree(out) == []  # claims and sessions go with their batches
    dead = subprocess.run([sys.executable, "-c", CLAIM_AND_DIE, str(out)], capture_output=True)
    assert dead.returncode == -signal.SIGKILL
    assert (out / ".cogvid-claims" / "k.claim").exists()
    with BatchClaims(out) as later:
        assert later.take("k").mine  # the killed batch's claim is free again
    assert tree(out) == []  # and its leftovers are gone


def test_a_claimed_video_made_meanwhile_is_not_made_again(tmp_path):
    out = tmp_path / "out"
    before = output_path(out, "old", 0)
    _save(before, metadata={"prompt": "old", "batch_key": "old"})
    with BatchClaims(out) as plain:
        assert plain.take("old").mine  # made before this batch started: a plain rerun makes it again
        made = output_path(out, "new", 1)
        _save(made, metadata={"prompt": "new", "batch_key": "new"})  # by someone else, meanwhile
        again = plain.take("new")
        assert not again.mine and again.reason == "already made" and again.path == made
    with BatchClaims(out, resume=True) as resuming:
        assert resuming.take("old") == Claim(False, "already made", before)
