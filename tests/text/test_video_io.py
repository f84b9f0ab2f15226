"""Output naming, MP4/JSON/PNG/GIF writing (atomic, never overwriting) and uint8 conversion."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from cogvid.errors import GenerationError, UsageError
from cogvid.video import (
    frames_to_uint8,
    output_path,
    read_video,
    save_frame_strip,
    slugify,
    write_gif,
    write_sidecar,
    write_video,
)

NOW = dt.datetime(2025, 3, 14, 15, 9, 26)


def moving_gradient(frames: int, height: int, width: int) -> np.ndarray:
    """Smooth, codec-friendly uint8 frames (T, H, W, 3) that change over time."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = []
    for t in range(frames):
        gray = 40 + 150 * (0.5 + 0.5 * np.sin((x + 2 * y) / 15 + t / 3))
        out.append(np.repeat(gray[..., None], 3, axis=2))
    return np.stack(out).round().astype(np.uint8)


# --- uint8 conversion -----------------------------------------------------------------------


def test_frames_to_uint8_truncates_like_the_original():
    # (x + 1) / 2 * 255 = 127.9 and 254.99 -> 127 and 254 (truncated, not rounded).
    values = torch.tensor([-1.0, 127.9 / 255 * 2 - 1, 254.99 / 255 * 2 - 1, 1.0, 3.0, -7.0])
    frames = values.view(1, 1, 6, 1).expand(2, 3, 6, 1)  # (F, 3, H, W)
    out = frames_to_uint8(frames)
    assert out.shape == (2, 6, 1, 3) and out.dtype == np.uint8
    assert out[0, :, 0, 0].tolist() == [0, 127, 254, 255, 255, 0]
    # The original's float32 computation, step by step.
    x = torch.randn(1, 4, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    original = (255.0 * torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0)).numpy().astype(np.uint8)
    batched = frames_to_uint8(x)  # (B, F, 3, H, W) -> (B, F, H, W, 3)
    assert batched.shape == (1, 4, 5, 7, 3)
    assert np.array_equal(batched, np.moveaxis(original, 2, -1))
    assert np.array_equal(frames_to_uint8(x.numpy()), batched)  # numpy input, same bits
    assert np.array_equal(frames_to_uint8(x.to(torch.bfloat16)[0]), frames_to_uint8(x.to(torch.bfloat16).float()[0]))


# --- names ----------------------------------------------------------------------------------


def test_slugify():
    assert slugify("A red ball, bouncing!") == "a-red-ball-bouncing"
    assert slugify("Crème brûlée / 東京 at night") == "creme-brulee-at-night"
    assert slugify("   ") == slugify("東京") == "video"
    long = slugify("a very long prompt about a golden retriever running across the beach at sunset")
    assert len(long) <= 48 and not long.endswith("-") and long.startswith("a-very-long-prompt")


def test_output_path_layout_and_next_free_index(tmp_path):
    first = output_path(tmp_path, "A red ball", 42, now=NOW)
    assert first == tmp_path / "2025-03-14" / "0000-a-red-ball-s42.mp4"
    assert not first.exists()  # reserved by this process's hidden write folder, not by an empty file
    assert (tmp_path / "2025-03-14" / ".0000.writing" / "owner").is_file()
    (tmp_path / "2025-03-14" / "0007-old-s1.json").write_text("{}")
    (tmp_path / "2025-03-14" / "notes.txt").write_text("not numbered")
    second = output_path(tmp_path, "A red ball", 42, now=NOW)
    assert second.name == "0008-a-red-ball-s42.mp4"
    assert output_path(tmp_path, "cat", 1, ext="gif", now=NOW).name == "0009-cat-s1.gif"
    assert output_path(tmp_path, "cat", 1, now=NOW + dt.timedelta(days=1)).parent.name == "2025-03-15"


def test_unique_names_across_processes(tmp_path):
    script = textwrap.dedent(
        f"""
        import datetime, os, sys, time
        from cogvid.outputs import atomic_file
        from cogvid.video import output_path
        now = datetime.datetime(2025, 3, 14)
        while not os.path.exists({str(tmp_path / "go")!r}):  # start together
            time.sleep(0.005)
        for i in range(5):
            path = output_path({str(tmp_path)!r}, "proc " + sys.argv[1] + " item " + str(i), i, now=now)
            with atomic_file(path) as temp:  # writes the reserved name, ending the reservation
                temp.write_bytes(b"x")
            print(path.name)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(rank)], stdout=subprocess.PIPE, text=True)
        for rank in range(4)
    ]
    (tmp_path / "go").touch()
    names = [line for proc in procs for line in proc.communicate(timeout=60)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    indices = sorted(int(name[:4]) for name in names)
    assert indices == list(range(20))  # 20 reservations, no index given twice
    folder = tmp_path / "2025-03-14"
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no write folders left behind


# --- MP4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps, size", [(8, (48, 64)), (16, (40, 56))])  # 40x56: not multiples of 16
def test_mp4_round_trip(tmp_path, fps, size):
    frames = moving_gradient(9, *size)
    path = output_path(tmp_path, "round trip", 0, now=NOW)
    assert write_video(frames, path, fps=fps, quality=10) == path
    back, back_fps = read_video(path)
    assert back.shape == frames.shape  # frame count and exact size kept
    assert back_fps == fps
    error = np.abs(back.astype(int) - frames.astype(int))
    assert error.mean() < 0.75 and error.max() <= 2
    # The default quality (the original's 5) is lossier but still close.
    default = tmp_path / "default.mp4"
    write_video(frames, default, fps=fps)
    assert np.abs(read_video(default)[0].astype(int) - frames.astype(int)).mean() < 4
    with path.open("rb") as f:
        assert f.read(12)[4:8] == b"ftyp"


def test_mp4_is_h264_yuv420p(tmp_path):
    import imageio_ffmpeg

    path = tmp_path / "codec.mp4"
    write_video(moving_gradient(3, 32, 32), path, fps=8)
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True)
    assert "h264" in probe.stderr and "yuv420p" in probe.stderr


def test_odd_sizes_are_padded_with_a_warning(tmp_path):
    path = tmp_path / "odd.mp4"
    with pytest.warns(UserWarning, match="even size"):
        write_video(moving_gradient(3, 33, 50), path, fps=8)
    assert read_video(path)[0].shape == (3, 34, 50, 3)


def test_never_overwrites(tmp_path):
    path = tmp_path / "taken.mp4"
    path.write_bytes(b"precious")
    with pytest.raises(UsageError, match="never overwrites"):
        write_video(moving_gradient(2, 16, 16), path, fps=8)
    assert path.read_bytes() == b"precious"
    (tmp_path / "taken.json").write_text("{}")
    with pytest.raises(UsageError):
        write_sidecar(path, {"a": 1})
    assert (tmp_path / "taken.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json", "taken.mp4"]


@pytest.mark.parametrize(
    "error, raised",
    [(OSError, GenerationError), (KeyboardInterrupt, KeyboardInterrupt), (ValueError, ValueError)],
)
def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch, error, raised):
    import cogvid.video as video_module

    real_run_ffmpeg = video_module._run_ffmpeg

    def failing_run_ffmpeg(command, data, keep_fds):
        with open(command[-1], "wb") as half:  # ffmpeg got part of the way
            half.write(b"\0" * 100)
        raise error("boom")

    monkeypatch.setattr(video_module, "_run_ffmpeg", failing_run_ffmpeg)
    path = output_path(tmp_path, "doomed", 3, now=NOW)
    with pytest.raises(raised):
        write_video(moving_gradient(6, 16, 16), path, fps=8)
    assert list(path.parent.iterdir()) == []  # neither the temporary file nor the reservation
    monkeypatch.setattr(video_module, "_run_ffmpeg", real_run_ffmpeg)
    again = output_path(tmp_path, "doomed", 3, now=NOW)
    assert again == path  # the index was given back


# --- sidecar, strip, GIF --------------------------------------------------------------------


def test_sidecar(tmp_path):
    path = output_path(tmp_path, "meta", 5, now=NOW)
    side = write_sidecar(path, {"prompt": "méta", "seed": np.int64(5), "size": (480, 720), "out": path, "when": NOW})
    assert side == path.with_suffix(".json")
    data = json.loads(side.read_text(encoding="utf-8"))
    assert data == {"prompt": "méta", "seed": 5, "size": [480, 720], "out": str(path), "when": NOW.isoformat()}
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_frame_strip_picks_evenly_spaced_frames(tmp_path):
    frames = np.zeros((17, 6, 4, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(17, dtype=np.uint8)[:, None, None] * 10  # frame i is red = 10 i
    path = save_frame_strip(frames, tmp_path / "strip.png", n=5)
    strip = np.asarray(Image.open(path))
    assert strip.shape == (6, 20, 3)
    assert strip[0, ::4, 0].tolist() == [0, 40, 80, 120, 160]  # frames 0, 4, 8, 12, 16
    small = np.asarray(Image.open(save_frame_strip(frames, tmp_path / "small.png", n=2, height=3)))
    assert small.shape == (3, 4, 3)


def test_gif(tmp_path):
    frames = moving_gradient(4, 16, 20)
    path = write_gif(frames, tmp_path / "anim.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (20, 16) and gif.info["duration"] == 100
