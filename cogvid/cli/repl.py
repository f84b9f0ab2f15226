"""``cogvid repl``: an interactive session that loads the model once and makes a video per prompt line."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from cogvid.cli import console
from cogvid.cli import options as opt

if TYPE_CHECKING:
    from cogvid.lora import LoraSpec
    from cogvid.pipeline import ResolvedModel, VideoPipeline
    from cogvid.registry import ModelEntry
    from cogvid.repl import CancelFlag, Command, Settings
    from cogvid.spec import ModelSpec

EXAMPLES = """\
Examples:

  cogvid repl                                   the embedded demo model; type a prompt, /help for commands
  cogvid repl -m cogvideox-5b --steps 30
  cogvid repl -m cogvideox-5b-i2v --image dog.png
  printf 'a red ball\\n/set steps 3\\na blue cube\\n' | cogvid repl --steps 2    scripted, one line at a time
"""

PROMPT = "cogvid> "

_IMAGE_PENDING = "(first frame not chosen yet)"

Image = typer.Option(None, "--image", metavar="PATH", help="First frame for -i2v models (change it later with /image).")


def _validate(spec: ModelSpec, name: str, settings: Settings) -> None:
    """Check frames, size and image of ``settings`` against a model before any heavy work."""
    from cogvid.pipeline import validate_request

    kwargs = settings.generate_kwargs()
    image = kwargs["image"]
    if image is None and spec.task == "i2v":
        image = _IMAGE_PENDING  # /image sets it later; frames and size are still checked now
    validate_request(spec, name, image, kwargs["num_frames"], kwargs["height"], kwargs["width"])


@contextlib.contextmanager
def _sigint_cancels(flag: CancelFlag) -> Iterator[None]:
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


class ReplSession:
    """A loaded pipeline and the settings of the next video; ``run_line`` handles one input line."""

    def __init__(
        self,
        pipe: VideoPipeline | None,
        resolved: ResolvedModel,
        settings: Settings,
        *,
        weights: Optional[Path],
        device: str,
        dtype: Optional[str],
        out: Path,
        as_json: bool,
        offload: bool,
        original_frames: bool,
        interactive: bool,
        vae_tiling: bool = False,
    ) -> None:
        from cogvid.repl import CancelFlag

        self.pipe = pipe
        self.resolved = resolved
        self.settings = settings
        self.weights = weights
        self.device = device
        self.dtype = dtype
        self.out = out
        self.as_json = as_json
        self.offload = offload
        self.original_frames = original_frames
        self.vae_tiling = vae_tiling
        self.interactive = interactive
        self.loras: tuple[LoraSpec, ...] = ()  # merged into the loaded model's weights
        self.flag = CancelFlag()
        self.last_prompt: str | None = None
        self.last_seed: int | None = None
        self.failures = 0

    # ----------------------------------------------------------------- dispatch

    def run_line(self, line: str) -> bool:
        """Handle one line (a prompt or a /command); errors are printed, never raised. False means quit."""
        from cogvid.errors import Cancelled, CogvidError
        from cogvid.repl import Command, parse_line

        try:
            parsed = parse_line(line)
            if parsed is None:
                return True
            if isinstance(parsed, Command):
                return self._command(parsed)
            self.generate(parsed)
        except (Cancelled, KeyboardInterrupt):
            self.failures += 1
            console.err.print("[yellow]cancelled[/]")
        except CogvidError as e:
            self.failures += 1
            console.print_error(e.message, e.hint)
        return True

    def _command(self, command: Command) -> bool:
        from cogvid.errors import UsageError
        from cogvid.repl import resolve_command

        try:
            name = resolve_command(command.name)
        except UsageError as e:
            console.print_error(e.message, e.hint)
            self.show_help()
            self.failures += 1
            return True
        if name == "quit":
            return False
        handler = getattr(self, f"cmd_{name}")
        handler(command.argument)
        return True

    # ----------------------------------------------------------------- commands

    def show_help(self) -> None:
        from cogvid.repl import help_lines

        for line in help_lines():
            console.err.print(line, markup=False)

    def cmd_help(self, argument: str) -> None:
        self.show_help()

    def cmd_set(self, argument: str) -> None:
        from cogvid.errors import UsageError
        from cogvid.repl import SETTING_KEYS

        key, _, value = argument.partition(" ")
        if not key:
            raise UsageError("/set needs a setting and a value", hint=f"settings: {', '.join(SETTING_KEYS)}; e.g. /set steps 30")
        settings = self.settings.with_setting(key.lower(), value)
        try:
            self._check(settings)
        except UsageError as e:  # the checks speak of command-line options; here it is /set
            hint = e.hint.replace(f"--{key.lower()}", f"/set {key.lower()}") if e.hint else None
            raise type(e)(e.message, hint=hint) from None
        self.settings = settings
        shown = dict(settings.rows(self._defaults()))
        console.err.print(f"{key.lower()} = {shown[key.lower()]}", markup=False)

    def cmd_seed(self, argument: str) -> None:
        import dataclasses

        from cogvid.repl import parse_seed

        if argument:
            self.settings = dataclasses.replace(self.settings, seed=parse_seed(argument))
        if self.settings.seed is None:
            last = f" (last video: {self.last_seed})" if self.last_seed is not None else ""
            console.err.print(f"seed = random, a new one per video{last}")
        else:
            console.err.print(f"seed = {self.settings.seed}")

    def cmd_image(self, argument: str) -> None:
        import dataclasses

        from cogvid.errors import UsageError

        if not argument:
            raise UsageError("/image needs a path or `none`", hint="e.g. /image photo.png")
        if argument.lower() == "none":
            self.settings = dataclasses.replace(self.settings, image=None)
            console.err.print("image = none")
            return
        from cogvid.image import load_image

        path = Path(argument).expanduser()
        if self.pipe.spec.task != "i2v":
            raise UsageError(f"{self.pipe.name} is a text-to-video model and takes no image", hint="/model picks an -i2v model")
        load_image(path)  # a missing or unreadable image is reported now, not at the next prompt
        self.settings = dataclasses.replace(self.settings, image=path)
        console.err.print(f"image = {path}", markup=False)

    def cmd_show(self, argument: str) -> None:
        engine = self.pipe.engine
        from cogvid.devices import DTYPE_NAMES

        console.err.print(f"model    {self.pipe.name} ({engine.device}, {DTYPE_NAMES.get(engine.dtype, engine.dtype)})", markup=False)
        for name, value in self.settings.rows(self._defaults()):
            console.err.print(f"{name:<8} {value}", markup=False)
        loras = ", ".join(f"{spec.path}:{spec.scale:g}" for spec in self.loras) or "none"
        console.err.print(f"lora     {loras}", markup=False)
        console.err.print(f"out      {self.out}", markup=False)

    def cmd_again(self, argument: str) -> None:
        from cogvid.errors import UsageError
        from cogvid.repl import draw_seed

        if self.last_prompt is None:
            raise UsageError("no prompt yet", hint="type a prompt first")
        self.generate(self.last_prompt, seed=draw_seed(avoid=self.last_seed))

    def cmd_model(self, argument: str) -> None:
        from cogvid.errors import MissingFileError, UsageError
        from cogvid.pipeline import resolve_model
        from cogvid.registry import get_model, load_registry

        name = argument
        if not name:
            available = [entry for entry in load_registry().values() if entry.weights_found(self.weights)]
            if not self.interactive:
                names = ", ".join(entry.name for entry in available)
                raise UsageError("/model needs a model name here (stdin is not a terminal)", hint=f"models with weights present: {names}")
            name = self._pick_model(available)
            if name is None:
                return
        entry = get_model(name)
        if not entry.weights_found(self.weights):
            problems = "; ".join(status.problem or str(status.path) for status in entry.weight_status(self.weights) if not status.found)
            raise MissingFileError(f"the weights of {name} are not present: {problems}", hint=f"`cogvid models show {name}` shows where they go")
        if name == self.pipe.name and not self.loras:
            console.err.print(f"{name} is already loaded", markup=False)
            return
        if self.loras:
            console.warn("LoRA dropped with the model switch (/lora PATH applies one again)")
        self._switch(resolve_model(name, self.weights), ())

    def cmd_lora(self, argument: str) -> None:
        from cogvid.errors import CogvidError
        from cogvid.lora import parse_specs

        if not argument:
            shown = ", ".join(f"{spec.path}:{spec.scale:g}" for spec in self.loras) or "none"
            console.err.print(f"lora = {shown}", markup=False)
            return
        if argument.lower() == "none":
            if not self.loras:
                console.err.print("lora = none", markup=False)
                return
            loras: tuple[LoraSpec, ...] = ()
        else:
            try:
                loras = parse_specs([argument])  # a missing folder or bad scale, before anything reloads
            except CogvidError as e:  # its messages speak of the --lora option; here it is /lora
                hint = e.hint.replace("--lora", "/lora") if e.hint else None
                raise type(e)(e.message.replace("--lora", "/lora"), hint=hint) from None
        self._switch(self.resolved, loras)
        shown = ", ".join(f"{spec.path}:{spec.scale:g}" for spec in self.loras) or "none"
        console.err.print(f"lora = {shown}", markup=False)

    def _pick_model(self, available: list[ModelEntry]) -> Optional[str]:
        import questionary

        choices = [questionary.Choice(f"{entry.name}  {entry.title}", value=entry.name) for entry in available]
        default = self.pipe.name if any(entry.name == self.pipe.name for entry in available) else None
        return questionary.select("model (only those whose weights are present)", choices=choices, default=default).ask()

    # ----------------------------------------------------------------- model and settings

    def _switch(self, resolved: ResolvedModel, loras: tuple[LoraSpec, ...]) -> None:
        """Release the current model and load ``resolved`` with ``loras``; on failure, the previous one again."""
        from cogvid.errors import CogvidError

        previous, previous_loras = self.resolved, self.loras
        self._release()
        try:
            self.load_model(resolved, loras)
        except (CogvidError, KeyboardInterrupt):  # never leave the session without a model
            console.err.print(f"loading {resolved.name} failed; loading {previous.name} again", markup=False)
            self.load_model(previous, previous_loras)
            raise
        self._fit_settings()

    def _release(self) -> None:
        self.pipe = None
        gc.collect()

    def load_model(self, resolved: ResolvedModel, loras: tuple[LoraSpec, ...] = ()) -> None:
        """Load ``resolved`` with ``loras`` merged, on the session's device and dtype (progress on stderr)."""
        from cogvid.pipeline import load

        self.pipe = load(device=self.device, dtype=self.dtype, lora=loras, progress=console.ProgressRenderer(), resolved=resolved)
        self.pipe.engine.offload = self.offload
        self.resolved, self.loras = resolved, tuple(loras)

    def _fit_settings(self) -> None:
        """After a model switch, drop the settings the new model cannot take, saying which."""
        import dataclasses

        from cogvid.errors import CogvidError

        settings = self.settings
        if self.pipe.spec.task == "t2v" and settings.image is not None:
            settings = dataclasses.replace(settings, image=None)
            console.warn("image dropped: this model is text-to-video")
        for keys in (("frames", "size"), ("sampler", "steps", "guidance")):
            try:
                self._check(settings)
            except CogvidError as e:
                settings = dataclasses.replace(settings, **{key: None for key in keys})
                console.warn(f"{' and '.join(keys)} back to the model's defaults ({e.message})")
        self.settings = settings
        if self.pipe.spec.task == "i2v" and settings.image is None:
            console.err.print(f"{self.pipe.name} needs a first frame: /image PATH", markup=False)

    def _check(self, settings: Settings) -> None:
        """Raise if the loaded model cannot take ``settings`` (frames, size, sampler, steps, guidance)."""
        _validate(self.pipe.spec, self.pipe.name, settings)
        self.pipe.engine.make_sampler(settings.sampler, settings.steps, settings.guidance)

    def _defaults(self) -> dict[str, str]:
        """The loaded model's values for the settings left unset."""
        from cogvid.diffusion import SAMPLER_NAMES

        spec, engine = self.pipe.spec, self.pipe.engine
        sampler = engine.make_sampler()
        target = engine.sampler_config.target
        scale = getattr(getattr(sampler, "guider", None), "scale", None)
        defaults = {
            "steps": str(sampler.num_steps),
            "frames": str(spec.default_frames),
            "size": f"{spec.default_height}x{spec.default_width}",
            "fps": str(spec.fps),
            "sampler": next((short for short, full in SAMPLER_NAMES.items() if full == target), target),
        }
        if isinstance(scale, (int, float)):
            defaults["guidance"] = f"{scale:g}"
        return defaults

    # ----------------------------------------------------------------- generation

    def generate(self, prompt: str, seed: Optional[int] = None) -> Path:
        """Make one video with the current settings and write it like ``cogvid t2v``; returns its path."""
        from cogvid.cli.generate import _report, _write
        from cogvid.repl import cancellable, draw_seed

        if seed is None:
            seed = self.settings.seed if self.settings.seed is not None else draw_seed()
        schedule = self.pipe.spec.decode_schedule(self.original_frames)
        self.last_prompt, self.last_seed = prompt, seed
        renderer = console.ProgressRenderer()
        self.flag.clear()
        started = time.perf_counter()
        try:
            with _sigint_cancels(self.flag):
                video = self.pipe.generate(
                    prompt,
                    seed=seed,
                    callback=cancellable(renderer, self.flag),
                    decode_schedule=schedule,
                    vae_tiling=self.vae_tiling,
                    **self.settings.generate_kwargs(),
                )
                self.flag.check()  # a Ctrl-C during the last decode chunk still means no file
                path = _write(video, self.out, prompt, self.settings.fps, renderer)
        finally:
            renderer.close()
        _report(path, video, self.as_json)
        console.err.print(f"generated in {time.perf_counter() - started:.1f} s (model kept loaded)")
        return path


def _prompt_loop(session: ReplSession) -> None:
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
    prompt_session: PromptSession[str] = PromptSession(
        history=FileHistory(str(path)), completer=NestedCompleter.from_nested_dict(completions)
    )
    while True:
        try:
            line = prompt_session.prompt(PROMPT)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        if not session.run_line(line):
            return


def _script_loop(session: ReplSession) -> None:
    """Not a terminal: one prompt or command per line until EOF; exit 1 if any line failed."""
    from cogvid.errors import GenerationError

    lines = 0
    for line in sys.stdin:
        lines += 1
        if not session.run_line(line):
            break
    if session.failures:
        raise GenerationError(f"{session.failures} of {lines} lines failed", hint="the messages above say which and why")


def repl(
    model: Optional[str] = opt.Model,
    weights: Optional[Path] = opt.Weights,
    config: list[Path] = opt.Config,
    overrides: list[str] = opt.Set,
    steps: Optional[int] = opt.Steps,
    guidance: Optional[float] = opt.Guidance,
    sampler: Optional[str] = opt.Sampler,
    seed: Optional[int] = opt.Seed,
    negative: str = opt.Negative,
    frames: Optional[int] = opt.Frames,
    size: Optional[str] = opt.Size,
    fps: Optional[int] = opt.Fps,
    image: Optional[Path] = Image,
    lora: list[str] = opt.Lora,
    device: str = opt.Device,
    dtype: Optional[str] = opt.Dtype,
    out: Path = opt.Out,
    as_json: bool = opt.Json,
    offload: bool = opt.Offload,
    vae_tiling: bool = opt.VaeTiling,
    original_frames: bool = opt.OriginalFrames,
) -> None:
    """Interactive session: the model loads once, then each line is a prompt (a video) or a /command.

    /help lists the commands. With stdin not a terminal it reads one line at a time (scriptable).
    """
    from cogvid.pipeline import resolve_model
    from cogvid.repl import Settings, parse_seed
    from cogvid.spec import parse_size

    settings = Settings(
        steps=steps,
        guidance=guidance,
        seed=None if seed is None else parse_seed(str(seed)),
        frames=frames,
        size=None if size is None else parse_size(size),
        fps=fps,
        sampler=sampler,
        negative=negative,
        image=image,
    )
    if image is not None:
        from cogvid.image import load_image

        load_image(image)  # a missing or corrupt image fails before the model loads
    resolved = resolve_model(model, weights, config, overrides)
    _validate(resolved.spec, resolved.name, settings)
    if sampler is not None:
        from cogvid.diffusion import sampler_config_with

        sampler_config_with(sampler, resolved.cfg.model.sampler_config)
    interactive = sys.stdin.isatty()
    session = ReplSession(
        None, resolved, settings, weights=weights, device=device, dtype=dtype, out=out, as_json=as_json,
        offload=offload, original_frames=original_frames, interactive=interactive, vae_tiling=vae_tiling,
    )
    from cogvid.lora import parse_specs

    session.load_model(resolved, parse_specs(lora))
    session._check(settings)
    if interactive:
        engine = session.pipe.engine
        console.err.print(
            f"cogvid repl · {session.pipe.name} on {engine.device} · /help for commands, Ctrl-D to leave", markup=False
        )
        if session.pipe.spec.task == "i2v" and image is None:
            console.err.print(f"{session.pipe.name} needs a first frame: /image PATH", markup=False)
        _prompt_loop(session)
    else:
        _script_loop(session)


def register(app: typer.Typer) -> None:
    """Add ``cogvid repl`` to the root app."""
    app.command("repl", epilog=EXAMPLES)(repl)
