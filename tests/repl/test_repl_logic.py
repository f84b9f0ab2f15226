"""The REPL's terminal-free logic: line parsing, commands, settings, history location, cancellation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cogvid.errors import Cancelled, UsageError
from cogvid.repl import (
    COMMANDS,
    CancelFlag,
    Command,
    cancellable,
    draw_seed,
    help_lines,
    history_path,
    parse_line,
    parse_setting,
    resolve_command,
    setting_rows,
    with_setting,
)
from cogvid.request import GenerationRequest


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", None),
        ("   \n", None),
        ("a red ball\n", "a red ball"),
        ("/set steps 3", Command("set", "steps 3")),
        ("  /SET   negative  blurry, dark \n", Command("set", "negative  blurry, dark")),
        ("/quit", Command("quit", "")),
        ("//slashes in a prompt", "/slashes in a prompt"),
    ],
)
def test_parse_line(line, expected):
    assert parse_line(line) == expected


def test_commands_resolve_by_name_alias_and_unique_prefix():
    assert resolve_command("show") == "show"
    assert resolve_command("exit") == "quit"
    assert resolve_command("q") == "quit"
    assert resolve_command("ag") == "again"
    with pytest.raises(UsageError, match="ambiguous: /set, /seed, /show"):
        resolve_command("s")
    with pytest.raises(UsageError, match="unknown command /hlep") as info:
        resolve_command("hlep")
    assert info.value.hint == "did you mean /help?"


def test_help_lists_every_command():
    text = "\n".join(help_lines())
    for name in COMMANDS:
        assert f"/{name}" in text


def test_parse_setting_values():
    assert parse_setting("steps", "3") == 3
    assert parse_setting("guidance", "7.5") == 7.5
    assert parse_setting("seed", "42") == 42
    assert parse_setting("seed", "random") is None
    assert parse_setting("frames", "49") == 49
    assert parse_setting("size", "480x720") == (480, 720)
    assert parse_setting("fps", "16") == 16
    assert parse_setting("sampler", "ddim") == "ddim"
    assert parse_setting("negative", "blurry, dark") == "blurry, dark"
    assert parse_setting("negative", "none") == ""
    assert parse_setting("steps", "default") is None


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("steps", "abc", "steps must be a whole number"),
        ("steps", "0", "steps must be at least 1"),
        ("guidance", "-1", "guidance must be at least 0"),
        ("guidance", "nan", "guidance must be at least 0"),
        ("guidance", "lots", "guidance must be a number"),
        ("seed", "-3", "seed must be between"),
        ("seed", "x", "seed must be a whole number or `random`"),
        ("size", "480", "bad size"),
        ("fps", "1.5", "fps must be a whole number"),
        ("steps", "", "needs a value"),
        ("stepz", "3", "unknown setting 'stepz'"),
    ],
)
def test_parse_setting_rejects(key, text, message):
    with pytest.raises(UsageError, match=message):
        parse_setting(key, text)


def test_settings_change_the_template_request():
    template = with_setting(with_setting(GenerationRequest(steps=2), "size", "96x128"), "negative", "blurry")
    assert (template.steps, template.height, template.width, template.negative) == (2, 96, 128, "blurry")
    assert with_setting(template, "size", "default").size is None
    assert with_setting(template, "sampler", "ddim").sampler == "ddim"
    with pytest.raises(UsageError, match="unknown sampler 'dim'"):
        with_setting(template, "sampler", "dim")  # the request checks what parse_setting leaves to it


def test_settings_rows_mark_model_defaults():
    rows = dict(setting_rows(GenerationRequest(steps=3, seed=None), {"steps": "50", "frames": "49", "guidance": "6"}))
    assert rows["steps"] == "3"
    assert rows["frames"] == "49 (model default)"
    assert rows["seed"].startswith("random")
    assert rows["image"] == "none"
    assert dict(setting_rows(GenerationRequest(seed=7), {}))["seed"] == "7"


def test_history_path_follows_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert history_path() == tmp_path / "data" / "cogvid" / "repl_history"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert history_path() == Path(tmp_path / "home" / ".local" / "share" / "cogvid" / "repl_history")


def test_cancellable_forwards_the_event_then_raises_once_flagged():
    seen = []
    flag = CancelFlag()
    callback = cancellable(seen.append, flag)
    callback("step 1")
    assert flag.request() == 1 and flag.is_set
    with pytest.raises(Cancelled, match="cancelled"):
        callback("step 2")
    assert seen == ["step 1", "step 2"]  # the current step finishes (and is shown) before stopping
    assert flag.request() == 2
    flag.clear()
    callback("step 3")
    assert not flag.is_set and seen[-1] == "step 3"


def test_draw_seed_avoids_the_previous_one(monkeypatch):
    values = iter([5, 5, 9, 5])
    monkeypatch.setattr("cogvid.repl.random.randrange", lambda stop: next(values))
    assert draw_seed(avoid=5) == 9
    assert draw_seed() == 5  # nothing to avoid
