"""The interactive session's state and commands: a loaded pipeline and the request template of the next video.

``cogvid.cli.repl`` supplies a :class:`ReplUI` (how to print, show progress, pick a model, turn Ctrl-C
into a cancel) and the prompt loop; every decision is taken here, so the session is tested without a
terminal. No Typer, rich or prompt_toolkit in this module.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from cogvid.errors import Cancelled, CogvidError, MissingFileError, UsageError
from cogvid.prepare import PreparedRequest, ResolvedModel, prepare, resolve_model
from cogvid.registry import ModelEntry, get_model, load_registry
from cogvid.repl import (
    SETTING_KEYS,
    CancelFlag,
    Command,
    cancellable,
    draw_seed,
    help_lines,
    parse_line,
    parse_seed,
    resolve_command,
    setting_rows,
    with_setting,
)
from cogvid.request import GenerationRequest, LoraSpec, parse_loras

_IMAGE_PENDING = Path("(first frame not chosen yet)")


class ReplUI(Protocol):
    """What the session needs from a user interface."""

    def say(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def error(self, message: str, hint: str | None) -> None: ...
    def progress(self) -> Callable[[Any], None]: ...  # a fresh progress renderer (may have .close())
    def pick_model(self, entries: Sequence[ModelEntry], current: str) -> str | None: ...
    def cancelling(self, flag: CancelFlag) -> AbstractContextManager: ...  # Ctrl-C sets ``flag`` inside
    def written(self, path: Path, video: Any) -> None: ...


def check_template(template: GenerationRequest, model: ResolvedModel) -> PreparedRequest:
    """Check the settings of ``template`` against ``model`` (a pending image stands in for an i2v model's)."""
    request = template.replace(prompt=template.prompt or "(settings check)")
    if request.image is None and model.spec.task == "i2v":
        request = request.replace(image=_IMAGE_PENDING)  # /image sets it later; frames and size are checked now
        return prepare(request, model, picture=_placeholder_picture(model))
    return prepare(request, model)


def _placeholder_picture(model: ResolvedModel) -> Any:
    from PIL import Image

    return Image.new("RGB", (model.spec.default_width, model.spec.default_height))


class ReplSession:
    """A loaded pipeline and the template request of the next video; :meth:`run_line` handles one line."""

    def __init__(self, template: GenerationRequest, out: Path, ui: ReplUI, *, interactive: bool) -> None:
        self.template = template
        self.out = out
        self.ui = ui
        self.interactive = interactive
        self.pipe: Any = None
        self.model: ResolvedModel | None = None
        self.flag = CancelFlag()
        self.last_prompt: str | None = None
        self.last_seed: int | None = None
        self.failures = 0

    # ----------------------------------------------------------------- dispatch

    def run_line(self, line: str) -> bool:
        """Handle one line (a prompt or a /command); errors are shown, never raised. False means quit."""
        try:
            parsed = parse_line(line)
            if parsed is None:
                return True
            if isinstance(parsed, Command):
                return self._command(parsed)
            self.generate(parsed)
        except (Cancelled, KeyboardInterrupt):
            self.failures += 1
            self.ui.warn("cancelled")
        except CogvidError as e:
            self.failures += 1
            self.ui.error(e.message, e.hint)
        return True

    def _command(self, command: Command) -> bool:
        try:
            name = resolve_command(command.name)
        except UsageError as e:
            self.ui.error(e.message, e.hint)
            self.cmd_help("")
            self.failures += 1
            return True
        if name == "quit":
            return False
        getattr(self, f"cmd_{name}")(command.argument)
        return True

    # ----------------------------------------------------------------- commands

    def cmd_help(self, argument: str) -> None:
        for line in help_lines():
            self.ui.say(line)

    def cmd_set(self, argument: str) -> None:
        key, _, value = argument.partition(" ")
        key = key.lower()
        if not key:
            raise UsageError("/set needs a setting and a value", hint=f"settings: {', '.join(SETTING_KEYS)}; e.g. /set steps 30")
        template = with_setting(self.template, key, value)
        try:
            check_template(template, self.model)
        except UsageError as e:  # the checks speak of command-line options; here it is /set
            hint = e.hint.replace(f"--{key}", f"/set {key}") if e.hint else None
            raise type(e)(e.message, hint=hint) from None
        self.template = template
        self.ui.say(f"{key} = {dict(setting_rows(template, self.defaults()))[key]}")

    def cmd_seed(self, argument: str) -> None:
        if argument:
            self.template = self.template.replace(seed=parse_seed(argument))
        if self.template.seed is None:
            last = f" (last video: {self.last_seed})" if self.last_seed is not None else ""
            self.ui.say(f"seed = random, a new one per video{last}")
        else:
            self.ui.say(f"seed = {self.template.seed}")

    def cmd_image(self, argument: str) -> None:
        if not argument:
            raise UsageError("/image needs a path or `none`", hint="e.g. /image photo.png")
        if argument.lower() == "none":
            self.template = self.template.replace(image=None)
            self.ui.say("image = none")
            return
        if self.model.spec.task != "i2v":
            raise UsageError(f"{self.model.name} is a text-to-video model and takes no image", hint="/model picks an -i2v model")
        template = self.template.replace(image=Path(argument).expanduser())
        check_template(template, self.model)  # a missing or unreadable image is reported now, not at the next prompt
        self.template = template
        self.ui.say(f"image = {template.image}")

    def cmd_show(self, argument: str) -> None:
        from cogvid.devices import dtype_name

        engine = self.pipe.engine
        self.ui.say(f"model    {self.model.name} ({engine.device}, {dtype_name(engine.dtype)})")
        for name, value in setting_rows(self.template, self.defaults()):
            self.ui.say(f"{name:<8} {value}")
        self.ui.say(f"lora     {_loras_text(self.template.model.loras)}")
        self.ui.say(f"out      {self.out}")

    def cmd_again(self, argument: str) -> None:
        if self.last_prompt is None:
            raise UsageError("no prompt yet", hint="type a prompt first")
        self.generate(self.last_prompt, seed=draw_seed(avoid=self.last_seed))

    def cmd_model(self, argument: str) -> None:
        weights = self.template.model.weights
        name = argument
        if not name:
            available = [entry for entry in load_registry().values() if entry.weights_found(weights)]
            if not self.interactive:
                names = ", ".join(entry.name for entry in available)
                raise UsageError("/model needs a model name here (stdin is not a terminal)", hint=f"models with weights present: {names}")
            name = self.ui.pick_model(available, self.model.name)
            if name is None:
                return
        entry = get_model(name)
        if not entry.weights_found(weights):
            problems = "; ".join(status.problem or str(status.path) for status in entry.weight_status(weights) if not status.found)
            raise MissingFileError(f"the weights of {name} are not present: {problems}", hint=f"`cogvid models show {name}` shows where they go")
        loras = self.template.model.loras
        if name == self.model.name and not loras:
            self.ui.say(f"{name} is already loaded")
            return
        if loras:
            self.ui.warn("LoRA dropped with the model switch (/lora PATH applies one again)")
        self._switch(self.template.model.replace(name=name, configs=(), overrides=(), loras=()))

    def cmd_lora(self, argument: str) -> None:
        if not argument:
            self.ui.say(f"lora = {_loras_text(self.template.model.loras)}")
            return
        if argument.lower() == "none":
            if not self.template.model.loras:
                self.ui.say("lora = none")
                return
            loras: tuple[LoraSpec, ...] = ()
        else:
            try:
                loras = parse_loras([argument])
                from cogvid.layout import check_lora_folders

                check_lora_folders(spec.path for spec in loras)  # before anything reloads
            except CogvidError as e:  # its messages speak of the --lora option; here it is /lora
                hint = e.hint.replace("--lora", "/lora") if e.hint else None
                raise type(e)(e.message.replace("--lora", "/lora"), hint=hint) from None
        self._switch(self.template.model.replace(loras=loras))
        self.ui.say(f"lora = {_loras_text(self.template.model.loras)}")

    # ----------------------------------------------------------------- model and settings

    def load(self, model: ResolvedModel) -> None:
        """Load ``model`` (with its choice's LoRAs) on the session's device and dtype, showing progress."""
        from cogvid.distributed import is_distributed
        from cogvid.pipeline import load

        if is_distributed():  # every rank would read the same terminal
            raise UsageError(
                "the REPL runs in one process; under torchrun only t2v, i2v and batch split videos over processes",
                hint="start `cogvid repl` without torchrun, or use `torchrun ... -m cogvid batch FILE --parallel sequence`",
            )

        renderer = self.ui.progress()
        try:
            self.pipe = load(resolved=model, progress=renderer)
        finally:
            getattr(renderer, "close", lambda: None)()
        self.model = model
        self.template = self.template.replace(model=model.choice)

    def _switch(self, choice: Any) -> None:
        """Release the current model and load the one of ``choice``; on failure, the previous one again."""
        previous = self.model
        self.pipe = None
        gc.collect()
        try:
            self.load(resolve_model(choice))
        except (CogvidError, KeyboardInterrupt):  # never leave the session without a model
            self.ui.say(f"loading {choice.name or 'the model'} failed; loading {previous.name} again")
            self.load(previous)
            raise
        self._fit_settings()

    def _fit_settings(self) -> None:
        """After a model switch, drop the settings the new model cannot take, saying which."""
        template = self.template
        if self.model.spec.task == "t2v" and template.image is not None:
            template = template.replace(image=None)
            self.ui.warn("image dropped: this model is text-to-video")
        for keys in (("frames", "size"), ("sampler", "steps", "guidance")):
            try:
                check_template(template, self.model)
            except CogvidError as e:
                template = template.replace(**{key: None for key in keys})
                self.ui.warn(f"{' and '.join(keys)} back to the model's defaults ({e.message})")
        self.template = template
        if self.model.spec.task == "i2v" and template.image is None:
            self.ui.say(f"{self.model.name} needs a first frame: /image PATH")

    def defaults(self) -> dict[str, str]:
        """The loaded model's values for the settings left unset."""
        spec = self.model.spec
        probe = check_template(GenerationRequest(model=self.template.model), self.model)
        defaults = {
            "steps": str(probe.sampler.steps),
            "frames": str(spec.default_frames),
            "size": f"{spec.default_height}x{spec.default_width}",
            "fps": str(spec.fps),
            "sampler": probe.sampler.name,
        }
        if probe.sampler.guidance is not None:
            defaults["guidance"] = f"{probe.sampler.guidance:g}"
        return defaults

    # ----------------------------------------------------------------- generation

    def generate(self, prompt: str, seed: int | None = None) -> Path:
        """Make one video with the current settings and write it like ``cogvid t2v``; returns its path."""
        if self.model.spec.task == "i2v" and self.template.image is None:
            raise UsageError(f"{self.model.name} is an image-to-video model and needs a first frame", hint="/image PATH")
        if seed is None:
            seed = self.template.seed if self.template.seed is not None else draw_seed()
        prepared = prepare(self.template.replace(prompt=prompt, seed=seed, num_videos=1), self.model)
        self.last_prompt, self.last_seed = prompt, seed
        renderer = self.ui.progress()
        self.flag.clear()
        started = time.perf_counter()
        try:
            with self.ui.cancelling(self.flag):
                video = self.pipe.run(prepared, callback=cancellable(renderer, self.flag))
                self.flag.check()  # a Ctrl-C during the last decode chunk still means no file
                path = video.save_new(self.out)
        finally:
            getattr(renderer, "close", lambda: None)()
        self.ui.written(path, video)
        self.ui.say(f"generated in {time.perf_counter() - started:.1f} s (model kept loaded)")
        return path


def _loras_text(loras: Sequence[LoraSpec]) -> str:
    return ", ".join(f"{spec.path}:{spec.scale:g}" for spec in loras) or "none"


__all__ = ["ReplSession", "ReplUI", "check_template"]
