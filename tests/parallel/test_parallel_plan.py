"""--parallel: the layout of a torchrun world over one video, decided and checked before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cogvid.cli.app import app
from cogvid.errors import UsageError
from cogvid.parallel import ParallelPlan, plan_parallel, sequence_shard, valid_sequence_degrees
from cogvid.request import GenerationRequest, ModelChoice

runner = CliRunner()
# The released 5B at 480x720, 49 frames: 48 heads, 13 x 30 x 45 = 17550 video tokens.
FIVE_B = dict(heads=48, tokens=17550)


def _torchrun(monkeypatch, world: int, rank: int = 0) -> None:
    for name, value in (("WORLD_SIZE", world), ("RANK", rank), ("LOCAL_RANK", rank)):
        monkeypatch.setenv(name, str(value))


def test_auto_picks_from_the_world_size_and_the_command():
    assert plan_parallel("auto", 1, guided=True, **FIVE_B) == ParallelPlan("single")
    assert plan_parallel("auto", 2, guided=True, **FIVE_B) == ParallelPlan("cfg", 2, cfg=2)
    assert plan_parallel("auto", 4, guided=True, **FIVE_B) == ParallelPlan("cfg+sequence", 4, cfg=2, sequence=2)
    assert plan_parallel("auto", 8, guided=True, **FIVE_B) == ParallelPlan("cfg+sequence", 8, cfg=2, sequence=4)
    assert plan_parallel("auto", 2, guided=False, **FIVE_B) == ParallelPlan("sequence", 2, sequence=2)
    assert plan_parallel("auto", 4, guided=True, batch=True, **FIVE_B) == ParallelPlan("data", 4)
    assert plan_parallel("data", 3, guided=True, **FIVE_B) == ParallelPlan("data", 3)
    # 2B: 30 heads; 3 processes cannot halve the guidance batch, so the tokens are split.
    assert plan_parallel("auto", 3, heads=30, tokens=17550, guided=True) == ParallelPlan("sequence", 3, sequence=3)


def test_explicit_modes_and_their_degrees():
    assert plan_parallel("sequence", 4, guided=True, **FIVE_B) == ParallelPlan("sequence", 4, sequence=4)
    assert plan_parallel("cfg+sequence", 2, guided=True, **FIVE_B) == ParallelPlan("cfg+sequence", 2, cfg=2, sequence=1)
    assert not ParallelPlan("data", 4).splits_video and ParallelPlan("cfg", 2, cfg=2).splits_video


@pytest.mark.parametrize(
    ("mode", "world", "heads", "tokens", "guided", "message", "hint"),
    [
        ("sequence", 4, 30, 17550, True, "cannot split 30 attention heads", "2, 3, 5, 6, 10, 15, 30"),
        ("cfg+sequence", 8, 30, 17550, True, "4 processes per guidance half cannot split 30", "4, 6, 10, 12, 20, 30, 60"),
        ("sequence", 4, 8, 3, True, "cannot split 3 video tokens", "size: 2"),
        ("cfg", 4, 48, 17550, True, "exactly 2 processes", "cfg+sequence"),
        ("cfg+sequence", 3, 48, 17550, True, "even number of processes", "sequence"),
        ("cfg", 2, 48, 17550, False, "no unconditional half", "--parallel sequence"),
        ("sequence", 1, 48, 17550, True, "this is the only one", "torchrun --nproc_per_node 4"),
        ("cfg", 1, 48, 17550, True, "this is the only one", "torchrun --nproc_per_node 2"),
    ],
)
def test_impossible_splits_name_the_valid_choices(mode, world, heads, tokens, guided, message, hint):
    with pytest.raises(UsageError, match=message) as error:
        plan_parallel(mode, world, heads=heads, tokens=tokens, guided=guided)
    assert hint in error.value.hint


def test_sequence_shards_cover_the_tokens_in_order():
    for tokens, degree in ((17550, 4), (27, 4), (45, 2), (60, 4), (5, 3)):
        shards = [sequence_shard(tokens, degree, index) for index in range(degree)]
        assert shards[0][0] == 0 and shards[-1][1] == tokens
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(shards, shards[1:]))
        assert max(end - start for start, end in shards) == -(-tokens // degree)
    assert valid_sequence_degrees(48, 17550) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 48]


def test_parallel_is_a_checked_model_choice_field_recorded_in_the_request():
    choice = ModelChoice(parallel="cfg+sequence")
    assert choice.to_json()["parallel"] == "cfg+sequence"
    assert ModelChoice.from_json(choice.to_json()) == choice
    assert ModelChoice().parallel == "auto"
    with pytest.raises(UsageError, match="unknown --parallel mode 'ring'") as error:
        choice.replace(parallel="ring")
    assert "auto, data, cfg, sequence, cfg+sequence" in error.value.hint
    request = GenerationRequest("a cat", model=choice)
    assert GenerationRequest.from_json(request.to_json()) == request


def test_prepare_plans_the_split_before_anything_loads(monkeypatch):
    from cogvid.prepare import prepare

    request = GenerationRequest("a red ball", steps=2, frames=17, model=ModelChoice(parallel="sequence"))
    with pytest.raises(UsageError, match="the only one"):
        prepare(request)
    _torchrun(monkeypatch, 2)
    prepared = prepare(request)  # test-tiny: 2 heads, 5 x 3 x 4 = 60 tokens
    assert prepared.parallel == ParallelPlan("sequence", 2, sequence=2)
    assert prepared.describe()["parallel"] == {"mode": "sequence", "world_size": 2, "cfg": 1, "sequence": 2}
    _torchrun(monkeypatch, 4)
    with pytest.raises(UsageError, match="2 attention heads") as error:
        prepare(request)
    assert "valid process counts for sequence with this model and size: 2" in error.value.hint
    assert prepare(request.replace(model=ModelChoice(parallel="cfg+sequence"))).parallel.sequence == 2
    assert prepare(request.replace(model=ModelChoice()), batch=True).parallel == ParallelPlan("data", 4)


def test_my_share_under_torchrun(monkeypatch):
    from cogvid.parallel import my_share
    from cogvid.prepare import prepare

    _torchrun(monkeypatch, 2, rank=1)
    request = GenerationRequest("a red ball", steps=2, seed=10, num_videos=3)
    data = my_share(prepare(request.replace(model=ModelChoice(parallel="data"))))
    assert [v.request.seed for v in data.videos] == [11] and data.writes and not data.lead and data.encodes_text
    split = my_share(prepare(request.replace(model=ModelChoice(parallel="cfg"))))
    assert [v.request.seed for v in split.videos] == [10, 11, 12] and not split.writes and not split.lead
    assert not split.encodes_text  # rank 0 encodes the prompt for both
    _torchrun(monkeypatch, 2, rank=0)
    lead = my_share(prepare(request.replace(model=ModelChoice(parallel="cfg"))))
    assert lead.writes and lead.lead and lead.encodes_text and len(lead.videos) == 3


def test_cli_parallel_option_is_checked_before_loading(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["t2v", "a red ball", "--parallel", "sequence", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "splits a video over several processes" in result.output and "torchrun" in result.output
    assert not out.exists()
    bad = runner.invoke(app, ["t2v", "a red ball", "--parallel", "rings", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown --parallel mode 'rings'" in bad.output
    dry = runner.invoke(app, ["t2v", "a red ball", "--parallel", "data", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    record = json.loads(dry.stdout)
    assert record["request"]["model"]["parallel"] == "data" and record["parallel"]["mode"] == "single"


def test_the_repl_refuses_torchrun(monkeypatch):
    from cogvid.prepare import resolve_model
    from cogvid.repl_session import ReplSession

    _torchrun(monkeypatch, 2)
    session = ReplSession(GenerationRequest(), Path("outputs"), ui=None, interactive=False)
    with pytest.raises(UsageError, match="the REPL runs in one process"):
        session.load(resolve_model(ModelChoice()))
