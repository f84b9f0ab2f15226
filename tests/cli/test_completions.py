"""The committed shell completion scripts are what the app generates today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gen_completions", ROOT / "tools" / "gen_completions.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)


@pytest.mark.parametrize("shell", gen.SHELLS)
def test_completion_scripts_are_up_to_date(shell):
    committed = (ROOT / "completions" / f"cogvid.{shell}").read_text()
    assert committed.strip(), f"completions/cogvid.{shell} is empty"
    assert committed == gen.completion_script(shell), f"run: python tools/gen_completions.py"
