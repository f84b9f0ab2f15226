"""Prompt files, jobs, resume keys, leftover cleanup and rank helpers: no model involved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cogvid.batch import (
    claim_output_folder,
    completed_outputs,
    job_key,
    parse_prompt_file,
    partial_outputs,
)
from cogvid.batch_run import plan_batch
from cogvid.distributed import gather_objects, rank_device, rank_info, shard
from cogvid.errors import MissingFileError, UsageError
from cogvid.request import GenerationRequest, ModelChoice


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_text_file_with_bom_crlf_comments_and_blank_lines(tmp_path):
    text = b"\xef\xbb\xbfa red ball\r\n# a comment\r\n\r\n  a blue cube  \r\n   # indented comment\r\nlast line"
    file = write(tmp_path / "p.txt", text)
    jobs = parse_prompt_file(file)
    expected = [(1, 0, "a red ball"), (4, 1, "a blue cube"), (6, 2, "last line")]
    assert [(j.line, j.index, j.prompt) for j in jobs] == expected
    assert all(j.ok and j.request.image is None for j in jobs)
    assert not jobs[0].prompt.startswith("\ufeff")


def test_old_mac_line_ends_and_unicode_prompts(tmp_path):
    file = write(tmp_path / "p.txt", "un chat qui saute\rзеркальный шар\r")
    assert [j.prompt for j in parse_prompt_file(file)] == ["un chat qui saute", "зеркальный шар"]


def test_seeds_derive_from_base_and_line_index(tmp_path):
    file = write(tmp_path / "p.txt", "one\n# off\ntwo\n")
    assert [j.request.seed for j in parse_prompt_file(file)] == [0, 2]
    assert [j.request.seed for j in parse_prompt_file(file, GenerationRequest(seed=100))] == [100, 102]
    # Commenting a line out leaves the other lines' seeds alone.
    write(file, "# one\n# off\ntwo\n")
    assert [j.request.seed for j in parse_prompt_file(file)] == [2]


def test_image_lines_resolve_beside_the_prompt_file(tmp_path, monkeypatch):
    (tmp_path / "dog.png").write_bytes(b"png")
    file = write(tmp_path / "p.txt", "the dog turns@@dog.png\ncats @@ /abs/cat.png\nnothing@@\n@@dog.png\n")
    monkeypatch.chdir(tmp_path.parent)
    jobs = parse_prompt_file(file)
    assert jobs[0].ok and jobs[0].prompt == "the dog turns" and jobs[0].request.image == tmp_path / "dog.png"
    assert jobs[1].ok and jobs[1].prompt == "cats" and jobs[1].request.image == Path("/abs/cat.png")
    assert not jobs[2].ok and "after '@@'" in jobs[2].error and jobs[2].line == 3
    assert not jobs[3].ok and "empty" in jobs[3].error and jobs[3].line == 4


def test_jsonl_overrides_and_defaults(tmp_path):
    lines = [
        {"prompt": "a", "seed": 7, "steps": 3, "guidance": 2, "frames": 9, "size": "48x64", "negative": "n",
         "num_videos": 2},
        {"prompt": "b", "size": [32, 48], "image": "x.png"},
        {"prompt": "c", "negative": None, "guidance": None, "steps": None},  # null: the command line's value
    ]
    file = write(tmp_path / "jobs.jsonl", "\ufeff" + "\r\n".join(json.dumps(line) for line in lines) + "\r\n")
    defaults = GenerationRequest(negative="ugly", seed=10, steps=5, guidance=6.0, frames=17, height=16, width=16)
    a, b, c = (job.request for job in parse_prompt_file(file, defaults))
    assert (a.seed, a.steps, a.guidance, a.frames, a.height, a.width) == (7, 3, 2.0, 9, 48, 64)
    assert (a.negative, a.num_videos) == ("n", 2)
    # A relative image not found beside the prompt file is kept as given (the current folder).
    assert (b.seed, b.height, b.width, b.image, b.negative) == (11, 32, 48, Path("x.png"), "ugly")
    assert (c.seed, c.steps, c.guidance, c.frames, c.height, c.width, c.num_videos) == (12, 5, 6.0, 17, 16, 16, 1)
    assert c.negative == "ugly"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"prompt": ""}', "'prompt' is missing or empty"),
        ('{"seed": 3}', "'prompt' is missing or empty"),
        ('{"prompt": "x", "colour": "red"}', "unknown field(s) 'colour'"),
        ('{"prompt": "x", "seed": -1}', "'seed': the seed must be between 0 and"),
        ('{"prompt": "x", "seed": 1180591620717411303424}', "'seed': the seed must be between 0 and"),
        ('{"prompt": "x", "steps": 0}', "'steps': the step count must be between 1 and 1000, found 0"),
        ('{"prompt": "x", "steps": 1e9}', "'steps': the step count must be a whole number, found float"),
        ('{"prompt": "x", "frames": "49"}', "'frames': the frame count must be a whole number, found str"),
        ('{"prompt": "x", "num_videos": true}', "'num_videos': the number of videos must be a whole number, found bool"),
        ('{"prompt": "x", "guidance": -2}', "'guidance': the guidance scale must be a finite number of at least 0"),
        ('{"prompt": "x", "guidance": NaN}', "'guidance': the guidance scale must be a finite number of at least 0"),
        ('{"prompt": "x", "size": "big"}', "'size': bad size"),
        ('{"prompt": "x", "size": [1, 2, 3]}', "'size': must be"),
        ('{"prompt": "x", "image": 5}', "'image': must be a path"),
        ('{"prompt": "x", "lora": 5}', "'lora': must be \"PATH[:SCALE]\""),
        ('{"prompt": "x", "lora": "a:1e30"}', "'lora': LoRA scale 1e+30 is out of range"),
        ('{"prompt": "x", "sampler": "ddim"}', "unknown field(s) 'sampler'"),
        ('{"from": "nowhere.json"}', "sidecar not found"),
    ],
)
def test_invalid_jsonl_line_is_reported_with_its_line_number(tmp_path, line, message):
    file = write(tmp_path / "jobs.jsonl", '{"prompt": "fine"}\n# comment\n' + line + '\n{"prompt": "also fine"}\n')
    jobs = parse_prompt_file(file)
    assert [j.line for j in jobs] == [1, 3, 4]
    assert jobs[0].ok and jobs[2].ok
    assert not jobs[1].ok and message in jobs[1].error, jobs[1].error


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(MissingFileError, match="prompt file not found") as missing:
        parse_prompt_file(tmp_path / "nope.txt")
    assert missing.value.exit_code == 3
    with pytest.raises(UsageError, match="no prompts") as empty:
        parse_prompt_file(write(tmp_path / "empty.txt", "\ufeff# only comments\r\n\r\n   \n"))
    assert empty.value.exit_code == 2
    with pytest.raises(UsageError, match="no JSON objects"):
        parse_prompt_file(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(UsageError, match="not UTF-8"):
        parse_prompt_file(write(tmp_path / "latin1.txt", "caf\xe9\n".encode("latin-1")))
    with pytest.raises(MissingFileError, match="not a file"):
        parse_prompt_file(tmp_path)


def test_plan_marks_failures_before_loading_and_keeps_order(tmp_path):
    """Every line is prepared against the model (no weights load); bad ones keep their line and hint."""
    jobs = write(tmp_path / "p.txt", "ok\nwith image@@missing.png\n")
    plan = plan_batch(jobs, GenerationRequest(frames=9, steps=2))
    assert [j.ok for j in plan.jobs] == [True, False]
    assert "image not found" in plan.jobs[1].error and plan.jobs[1].line == 2
    bad_frames = plan_batch(jobs, GenerationRequest(frames=10))
    assert not bad_frames.jobs[0].ok and "cannot make 10 frames" in bad_frames.jobs[0].error
    assert bad_frames.jobs[0].hint == "use --frames 9 or 17"
    assert [u.job.line for u in plan.units] == [1] and plan.units[0].prepared.request.steps == 2


def test_job_key_changes_with_every_setting_and_is_stable():
    base = GenerationRequest(prompt="a red ball", seed=3, steps=2, frames=9, height=48, width=64)
    key = job_key(base, 0, "test-tiny")
    # The same settings give the same key, whichever line they are on: moving a line keeps its finished videos.
    assert key == job_key(GenerationRequest(prompt="a red ball", seed=3, steps=2, frames=9, height=48, width=64), 0, "test-tiny")
    # cogvid 0.1 computed this exact key for these settings: outputs made before the request object resume.
    assert key == "62e34c3ff8b997e863c886f99b54f150"
    changes = [
        {"prompt": "a blue ball"},
        {"negative": "blurry"},
        {"image": Path("/i.png")},
        {"seed": 4},
        {"steps": 3},
        {"guidance": 1.0},
        {"frames": 17},
        {"height": 32, "width": 64},
        {"width": 48},
        {"sampler": "ddim"},
    ]
    variants = [job_key(base.replace(**change), 0, "test-tiny") for change in changes]
    variants += [job_key(base, 1, "test-tiny"), job_key(base, 0, "cogvideox-2b")]
    assert len({key, *variants}) == len(variants) + 1


def _sidecar(folder: Path, stem: str, key: str, video_bytes: bytes = b"mp4") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.mp4").write_bytes(video_bytes)
    (folder / f"{stem}.json").write_text(json.dumps({"batch_key": key, "file": f"{stem}.mp4"}))
    return folder / f"{stem}.mp4"


def test_completed_outputs_needs_sidecar_and_non_empty_video(tmp_path):
    out = tmp_path / "out"
    good = _sidecar(out / "2026-01-01", "0000-a-s0", "k1")
    _sidecar(out / "2026-01-02", "0000-b-s1", "k2", video_bytes=b"")  # empty video: not done
    orphan = _sidecar(out / "2026-01-02", "0001-c-s2", "k3")
    orphan.unlink()  # sidecar without its video: not done
    (out / "2026-01-02" / "0002-d-s3.mp4").write_bytes(b"")  # a bare reservation: not done
    (out / "2026-01-02" / "notes.json").write_text("{broken")  # unreadable JSON is ignored
    (out / "2026-01-02" / "0003-t2v-s4.json").write_text(json.dumps({"file": "0003-t2v-s4.mp4"}))  # not a batch output
    assert completed_outputs(out) == {"k1": good}
    assert completed_outputs(tmp_path / "nothing-here") == {}


def test_partial_outputs_are_the_writes_of_dead_writers_only(tmp_path):
    import datetime as dt

    from cogvid.outputs import reserve

    out = tmp_path / "out"
    keep = _sidecar(out / "2026-01-01", "0000-a-s0", "k1")
    day = out / "2026-01-01"
    stale = day / ".0001.writing"  # a killed writer's: nobody holds the lock on its owner file
    stale.mkdir()
    (stale / "owner").write_text("12345 elsewhere\n")
    (stale / "0001-b-s1.mp4").write_bytes(b"half a video")
    not_ours = day / "0002-c-s2.mp4"
    not_ours.write_bytes(b"")  # an empty file cogvid did not write: never touched
    live = reserve(out, "live", 3, now=dt.datetime(2026, 1, 1))  # a write in progress (this process)
    assert partial_outputs(out) == [stale]
    with claim_output_folder(out) as removed:
        assert removed == [stale]
    assert not stale.exists() and live.dir.is_dir() and not_ours.exists()
    assert keep.exists() and keep.with_suffix(".json").exists()
    live.close()
    assert sorted(p.name for p in day.iterdir()) == ["0000-a-s0.json", "0000-a-s0.mp4", "0002-c-s2.mp4"]


def test_rank_info_shard_and_device(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert rank_info() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_info() == (3, 4, 1)
    assert shard(list(range(10)), 3, 4) == [3, 7]
    assert shard(list(range(10)), 0, 4) == [0, 4, 8]
    assert sorted(x for r in range(4) for x in shard(list(range(10)), r, 4)) == list(range(10))
    assert rank_device("cpu", 1, 4) == "cpu"
    assert rank_device("cuda:0", 1, 4) == "cuda:0"
    assert rank_device("auto", 1, 1) == "auto"
    import torch

    expected = "auto" if not torch.cuda.is_available() else f"cuda:{1 % torch.cuda.device_count()}"
    assert rank_device("auto", 1, 4) == expected
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UsageError, match="inconsistent torchrun environment"):
        rank_info()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(UsageError, match="not an integer"):
        rank_info()


def test_gather_without_torchrun_is_local_and_never_starts_a_group(monkeypatch):
    import torch.distributed as dist

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert gather_objects({"a": 1}) == [{"a": 1}]
    assert not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert gather_objects([1]) is None  # no MASTER_ADDR: no group can be formed
    assert not dist.is_initialized()
    assert os.environ.get("MASTER_ADDR") is None
