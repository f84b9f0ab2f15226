"""Regenerate the shell completion scripts in completions/ from the app.

Run after changing commands: python tools/gen_completions.py
(tests/cli/test_completions.py fails when the committed scripts are out of date).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
ROOT = Path(__file__).resolve().parents[1]


def completion_script(shell: str) -> str:
    """The script Typer generates for ``shell`` (as `cogvid --show-completion SHELL` would)."""
    env = {**os.environ, "_COGVID_COMPLETE": f"source_{shell}"}
    code = "import sys; sys.argv[0] = 'cogvid'; from cogvid.cli.app import main; main()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return result.stdout


def main() -> None:
    for shell in SHELLS:
        path = ROOT / "completions" / f"cogvid.{shell}"
        path.write_text(completion_script(shell))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
