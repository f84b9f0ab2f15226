"""Options shared by the generating commands (t2v, i2v, batch, repl), declared once.

:func:`with_options` adds groups of options to a command's signature (Typer reads it) and hands the
command a :class:`CliOptions`, which turns the values into one request: each value is parsed here,
once, and then travels inside the request.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from cogvid.request import GenerationRequest, ModelChoice


def complete_model(incomplete: str) -> list[str]:
    from cogvid.registry import load_registry

    return [name for name in load_registry() if name.startswith(incomplete)]


def _complete_sampler(incomplete: str) -> list[str]:
    from cogvid.request import SAMPLER_NAMES

    return [name for name in SAMPLER_NAMES if name.startswith(incomplete)]


@dataclass(frozen=True)
class _Option:
    name: str
    annotation: Any
    info: Any  # typer.Option(...)


MODEL_OPTIONS = (
    _Option("model", Optional[str], typer.Option(None, "--model", "-m", help="Model name (see `cogvid models list`), or a model folder (diffusers or SAT layout).", autocompletion=complete_model)),
    _Option("weights", Optional[Path], typer.Option(None, "--weights", metavar="DIR", help="Weights root (default: $COGVID_WEIGHTS or ~/.cache/cogvid/models).")),
    _Option("config", list[Path], typer.Option([], "--config", metavar="FILE", help="Extra YAML merged over the model's own (repeatable).")),
    _Option("overrides", list[str], typer.Option([], "--set", metavar="KEY=VALUE", help="Override a dotted config key, e.g. args.sampling_fps=16 (repeatable).")),
    _Option("lora", list[str], typer.Option([], "--lora", metavar="PATH[:SCALE]", help="SAT LoRA checkpoint folder, with an optional scale (repeatable).")),
    _Option("device", str, typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")),
    _Option("dtype", Optional[str], typer.Option(None, "--dtype", help="fp32, fp16 or bf16 (default: the model's on GPU, fp32 on CPU).")),
    _Option("offload", Optional[str], typer.Option(None, "--offload", metavar="MODE", help="How T5, DiT and VAE share the GPU: none, text (T5 leaves after encoding), model (each part only while used), blocks (DiT layers streamed). Default: --memory picks.")),
    _Option("memory", str, typer.Option("auto", "--memory", metavar="auto|off|SIZE", help="GPU memory to fit: auto (the free memory), a size such as 24GB, or off. Picks --offload and --vae-tiling when not given.")),
    _Option("parallel", str, typer.Option("auto", "--parallel", metavar="MODE", help="Under torchrun: data (whole videos per process), cfg (guidance halves on 2), sequence (video tokens split), cfg+sequence, or auto.", autocompletion=lambda incomplete: [m for m in ("auto", "data", "cfg", "sequence", "cfg+sequence") if m.startswith(incomplete)])),
    _Option("compile", bool, typer.Option(False, "--compile", help="torch.compile the DiT blocks: the first video compiles (minutes), the next ones run faster.")),
    _Option("quantize", Optional[str], typer.Option(None, "--quantize", metavar="MODE", help="Quantize the DiT's linear layers with torchao: int8wo, int8dq, fp8wo, fp8dq (fp8: CUDA, compute capability 8.9+).")),
    _Option("quantize_text", bool, typer.Option(False, "--quantize-text", help="Quantize T5 too, with the --quantize mode.")),
    _Option("attention", str, typer.Option("sdpa", "--attention", help="Attention kernel: sdpa (default), flash (flash-attn), sage (SageAttention), auto.")),
)
VIDEO_OPTIONS = (
    _Option("steps", Optional[int], typer.Option(None, "--steps", help="Denoising steps (default: the model's, 50).")),
    _Option("guidance", Optional[float], typer.Option(None, "--guidance", help="Classifier-free guidance scale (default: the model's, 6).")),
    _Option("sampler", Optional[str], typer.Option(None, "--sampler", help="Sampler short name, e.g. vpsde-dpmpp2m (default), ddim, dpmpp2m.", autocompletion=_complete_sampler)),
    _Option("seed", Optional[int], typer.Option(None, "--seed", help="Random seed (default: a random one, printed and saved in the sidecar).")),
    _Option("negative", str, typer.Option("", "--negative", help="Negative prompt (default: none, the original's zero unconditional input).")),
    _Option("frames", Optional[int], typer.Option(None, "--frames", help="Number of frames (1.0 models: 8k+1 up to 49; 1.5: 16k+1 up to 161).")),
    _Option("size", Optional[str], typer.Option(None, "--size", metavar="HxW", help="Video size, height x width, e.g. 768x1360.")),
    _Option("fps", Optional[int], typer.Option(None, "--fps", help="Frames per second of the written video (default: the model's).")),
    _Option("vae_tiling", Optional[bool], typer.Option(None, "--vae-tiling/--no-vae-tiling", help="Decode in overlapping spatial tiles: less memory at large sizes, slightly different pixels (default: only if --memory needs it).")),
    _Option("cache", Optional[str], typer.Option(None, "--cache", metavar="KIND[:T]", help="Step cache: teacache or fbcache, with an optional threshold (default 0.3 and 0.12), e.g. teacache:0.2; skips DiT blocks at steps that barely change.")),
    _Option("original_frames", bool, typer.Option(True, "--original-frames/--diffusers-frames", help="1.5 models: decode as the original SAT code (81 requested frames -> 84) or as diffusers (81).")),
)
NUM_VIDEOS = _Option("num_videos", int, typer.Option(1, "--num-videos", "-n", help="Videos per prompt (seeds seed, seed+1, ...)."))
OUTPUT_OPTIONS = (
    _Option("out", Path, typer.Option(Path("outputs"), "--out", "-o", metavar="DIR", help="Output folder (videos go to DIR/<date>/).")),
    _Option("as_json", bool, typer.Option(False, "--json", help="Print one JSON result per video on stdout.")),
)
DRY_RUN = _Option("dry_run", bool, typer.Option(False, "--dry-run", help="Check everything and print the resolved request(s); load and write nothing."))
FROM = _Option("from_sidecar", Optional[Path], typer.Option(None, "--from", metavar="SIDECAR", help="Make the video of a sidecar (.json) again; options given as well override it."))

_CONTEXT = "cogvid_cli_context"  # the Typer context, added to every command with shared options

# Option name -> the request field it sets (model options go into request.model).
_MODEL_FIELDS = {"model": "name", "weights": "weights", "config": "configs", "overrides": "overrides", "lora": "loras",
                 "device": "device", "dtype": "dtype", "offload": "offload", "memory": "memory", "parallel": "parallel",
                 **{k: k for k in ("compile", "quantize", "quantize_text", "attention")}}
_VIDEO_FIELDS = {"steps", "guidance", "sampler", "seed", "negative", "frames", "fps", "vae_tiling", "num_videos", "cache"}


class CliOptions:
    """The shared options of one command call, and which of them the user gave."""

    def __init__(self, values: dict[str, Any], given: set[str], debug: bool = False) -> None:
        self.values = values
        self.given = given
        self.debug = debug  # cogvid --debug: tracebacks too

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def _model_fields(self, only_given: bool) -> dict[str, Any]:
        fields = {}
        for option, field in _MODEL_FIELDS.items():
            if option in self.values and (not only_given or option in self.given):
                value = self.values[option]
                fields[field] = tuple(value) if isinstance(value, list) else value
        return fields

    def _video_fields(self, only_given: bool) -> dict[str, Any]:
        from cogvid.spec import parse_size

        fields = {k: v for k, v in self.values.items() if k in _VIDEO_FIELDS and (not only_given or k in self.given)}
        if "size" in self.values and (not only_given or "size" in self.given):
            size = parse_size(self.values["size"]) if self.values["size"] is not None else (None, None)
            fields["height"], fields["width"] = size
        if "original_frames" in self.values and (not only_given or "original_frames" in self.given):
            fields["decode"] = "original" if self.values["original_frames"] else "diffusers"
        return fields

    def request(self, **own: Any) -> GenerationRequest:
        """The request these options describe; with ``--from``, the sidecar's, overridden by what was given.

        ``own`` holds the command's own values (prompt, image): None ones are left as they are.
        """
        own = {key: value for key, value in own.items() if value is not None}
        sidecar = self.values.get("from_sidecar")
        if sidecar is None:
            model = ModelChoice(**self._model_fields(only_given=False))
            return GenerationRequest(model=model, **self._video_fields(only_given=False), **own)
        from cogvid.sidecar import replay_request

        return replay_request(sidecar, {**self._video_fields(only_given=True), **own}, self._model_fields(only_given=True))


def with_options(*groups: _Option | tuple[_Option, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of ``groups`` to a command; the command receives them as ``options: CliOptions``."""
    shared = [option for group in groups for option in (group if isinstance(group, tuple) else (group,))]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "options"]
        added = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.info, annotation=o.annotation) for o in shared]
        context = inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {o.name: kwargs.pop(o.name) for o in shared}
            ctx = kwargs.pop(_CONTEXT)
            given = {name for name in values if _given(ctx, name)}
            root = ctx.find_root().obj
            debug = bool(isinstance(root, dict) and root.get("debug"))
            return command(**kwargs, options=CliOptions(values, given, debug))

        wrapper.__signature__ = signature.replace(parameters=[*own, *added, context])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            **{p.name: p.annotation for p in own}, **{o.name: o.annotation for o in shared}, _CONTEXT: typer.Context,
        }
        return wrapper

    return decorate


def _given(context: typer.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (on the command line or through the environment)."""
    source = context.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
