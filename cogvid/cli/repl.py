"""``cogvid repl``: an interactive session that loads the model once and makes a video per prompt line.

The session itself (settings, commands, model switching) is :class:`cogvid.repl_session.ReplSession`;
this module draws it: the prompt with history and completion, progress, Ctrl-C, the model picker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from cogvid.cli import console
from cogvid.cli.generate import report
from cogvid.cli.options import MODEL_OPTIONS, OUTPUT_OPTIONS, VIDEO_OPTIONS, CliOptions, with_options

EXAMPLES = """\
Examples:

  cogvid repl                                   the embedded demo model; type a prompt, /help for commands
  cogvid repl -m cogvideox-5b --steps 30
  cogvid repl -m cogvideox-5b-i2v --image dog.png
  printf 'a red ball\\n/set steps 3\\na blue cube\\n' | cogvid repl --steps 2    scripted, one line at a time
"""

PROMPT = "cogvid> "


class TerminalUI:
    """How the session talks to a person: stderr lines, rich progress, a picker, Ctrl-C as cancel."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def say(self, text: str) -> None:
        console.err.print(text, markup=False)

    def warn(self, text: str) -> None:
        if text == "cancelled":
            console.err.print("[yellow]cancelled[/]")
        else:
            console.warn(text)

    def error(self, message: str, hint: str | None) -> None:
        console.print_error(message, hint)

    def progress(self) -> console.ProgressRenderer:
        return console.ProgressRenderer()

    def pick_model(self, entries: Sequence[Any], current: str) -> Optional[str]:
        import questionary

        choices = [questionary.Choice(f"{entry.name}  {entry.title}", value=entry.name) for entry in entries]
        default = current if any(entry.name == current for entry in entries) else None
        return questionary.select("model (only those whose weights are present)", choices=choices, default=default).ask()

    @contextlib.contextmanager
    def cancelling(self, flag: Any) -> Iterator[None]:
        """While the block runs, Ctrl-C sets ``flag`` (the generation stops after the current step);
        a second Ctrl-C raises KeyboardInterrupt at once. Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if flag.request() > 1:
                raise KeyboardInterrupt
            os.write(2, b"\ncancelling after the current step (Ctrl-C again to stop now)\n")

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def written(self, path: Path, video: Any) -> None:
        report(path, video, self.as_json)


def _prompt_loop(session: Any) -> None:
    """Interactive: line editing, history kept across sessions, Ctrl-C clears the line, Ctrl-D leaves."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import NestedCompleter, PathCompleter
    from prompt_toolkit.history import FileHistory

    from cogvid.repl import COMMANDS, SETTING_KEYS, history_path

    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    completions: dict[str, Any] = {f"/{name}": None for name in COMMANDS}
    completions["/set"] = {key: None for key in SETTING_KEYS}
    completions["/seed"] = {"random": None}
    completions["/image"] = PathCompleter(expanduser=True)
    completions["/lora"] = PathCompleter(expanduser=True)
    prompt_session: Any = PromptSession(history=FileHistory(str(path)), completer=NestedCompleter.from_nested_dict(completions))
    while True:
        try:
            line = prompt_session.prompt(PROMPT)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        if not session.run_line(line):
            return


def _script_loop(session: Any) -> None:
    """Not a terminal: one prompt or command per line until EOF; exit 1 if any line failed."""
    from cogvid.errors import GenerationError

    lines = 0
    # Bytes that are not UTF-8 reach the session as surrogates, which it refuses line by line.
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="surrogateescape", closefd=False)
    for line in stdin:
        lines += 1
        if not session.run_line(line):
            break
    if session.failures:
        raise GenerationError(f"{session.failures} of {lines} lines failed", hint="the messages above say which and why")


@with_options(MODEL_OPTIONS, VIDEO_OPTIONS, OUTPUT_OPTIONS)
def repl(
    image: Optional[Path] = typer.Option(None, "--image", metavar="PATH", help="First frame for -i2v models (change it later with /image)."),
    *,
    options: CliOptions,
) -> None:
    """Interactive session: the model loads once, then each line is a prompt (a video) or a /command.

    /help lists the commands. With stdin not a terminal it reads one line at a time (scriptable).
    """
    from cogvid.prepare import resolve_model
    from cogvid.repl_session import ReplSession, check_template

    from cogvid.outputs import check_output_folder

    template = options.request(image=image)
    model = resolve_model(template.model)
    check_template(template, model)  # every setting, before the model loads
    check_output_folder(options.out)
    interactive = sys.stdin.isatty()
    session = ReplSession(template, options.out, TerminalUI(options.as_json), interactive=interactive)
    session.load(model)
    if interactive:
        engine = session.pipe.engine
        console.err.print(f"cogvid repl · {model.name} on {engine.device} · /help for commands, Ctrl-D to leave", markup=False)
        if model.spec.task == "i2v" and image is None:
            console.err.print(f"{model.name} needs a first frame: /image PATH", markup=False)
        _prompt_loop(session)
    else:
        _script_loop(session)
