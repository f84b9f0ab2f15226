"""The ``cogvid`` command: a Typer app whose commands import their heavy parts lazily."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from cogvid import __version__
from cogvid.cli import console
from cogvid.errors import CogvidError

EXAMPLES = """\
Examples:

  cogvid t2v "a red circle moving left"     # demo model, no download
  cogvid t2v "a cat surfing" -m cogvideox-5b --seed 42
  cogvid i2v photo.png "the dog turns" -m cogvideox-5b-i2v
  cogvid batch prompts.txt -m cogvideox-5b --resume
  cogvid repl -m cogvideox-5b               # the model stays loaded
  cogvid models list                        # which weights are present
  cogvid plan -m cogvideox-5b               # will it fit? GPU memory per stage
"""


def _debug_enabled(ctx: typer.Context | None) -> bool:
    if os.environ.get("COGVID_DEBUG"):
        return True
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("debug"))


class CogvidGroup(TyperGroup):
    """Turns cogvid errors, and click's own usage errors, into ``error:``/``hint:`` lines and exit codes
    (tracebacks with --debug)."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # a bad option value or a missing argument: exit 2, our format
            context = getattr(e, "ctx", None)
            command = context.command_path if context is not None else "cogvid"
            console.print_error(_click_message(e), f"see `{command} --help`")
            code = getattr(e, "exit_code", 2)
        except typer.Abort:
            console.print_error("interrupted")
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CogvidError as e:
            if _debug_enabled(ctx):
                traceback.print_exc()
            console.print_error(e.message, e.hint)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            console.print_error("interrupted")
            ctx.exit(130)


def _click_message(error: typer.TyperException) -> str:
    """click's message in one line, lower-case first letter like cogvid's own ("invalid value for ...")."""
    message = " ".join(error.format_message().split())
    return message[:1].lower() + message[1:]


app = typer.Typer(
    name="cogvid",
    cls=CogvidGroup,
    help="Generate videos with CogVideoX models in their native SAT format.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cogvid {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Generate videos with CogVideoX models in their native SAT format."""
    ctx.obj = {"debug": debug}
    console.route_warnings()


def _register() -> None:
    from cogvid.cli import batch, cache, export, generate, lora, models, plan, repl

    app.command("t2v", epilog=generate.T2V_EXAMPLES)(generate.t2v)
    app.command("i2v", epilog=generate.I2V_EXAMPLES)(generate.i2v)
    app.command("batch", epilog=batch.EXAMPLES)(batch.batch)
    app.command("repl", epilog=repl.EXAMPLES)(repl.repl)
    app.command("export", epilog=export.EXAMPLES)(export.export)
    app.command("plan", epilog=plan.EXAMPLES)(plan.plan)
    app.add_typer(models.app, name="models")
    app.add_typer(lora.app, name="lora")
    app.add_typer(cache.app, name="cache")


_register()


def main() -> None:
    """Console-script entry point: a bug becomes exit code 70 with one line (traceback with --debug)."""
    try:
        app(prog_name="cogvid")
    except SystemExit:
        raise
    except Exception as e:
        if os.environ.get("COGVID_DEBUG") or "--debug" in sys.argv[1:]:
            traceback.print_exc()
        console.print_error(
            f"internal error: {type(e).__name__}: {e}",
            "this is a bug in cogvid; rerun with --debug for the traceback and report it",
        )
        sys.exit(70)


if __name__ == "__main__":  # pragma: no cover
    main()
