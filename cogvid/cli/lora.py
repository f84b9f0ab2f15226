"""``cogvid lora inspect|apply``: look into a SAT LoRA checkpoint, or merge it into a base model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cogvid.cli import console

app = typer.Typer(
    help="Inspect SAT LoRA checkpoints and merge them into a base model (use --lora on t2v/i2v to run one).",
    no_args_is_help=True,
)


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="SAT LoRA checkpoint folder (holding 'latest') or its .pt file."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
) -> None:
    """Show a LoRA's rank, scaling, layers and projections, size, dtype and which models it fits.

    Example: cogvid lora inspect ckpts/lora-09-09-21-10
    """
    from cogvid.lora import describe_lora, read_lora

    info = describe_lora(read_lora(path))
    if as_json:
        console.print_json(info)
        return
    out = console.out
    layers = info["lora_layers"]
    covered = "all" if len(layers) == info["model_layers"] else ", ".join(map(str, layers))
    out.print(f"[bold]LoRA[/] {info['path']}")
    out.print(f"rank {info['rank']} · lora_alpha {info['lora_alpha']:g} ({info['lora_alpha_from']}) · scaling {info['scaling']:.6g}")
    out.print(f"layers: {covered} of {info['model_layers']} · projections: {', '.join(info['projections'])}")
    out.print(f"{info['parameters']:,} LoRA parameters · {info['dtype']} · hidden size {info['hidden_size']}")
    out.print(f"trained on: {info['trained_on']}")
    fits = info["fits"]
    out.print("fits: " + (", ".join(fits) if fits else "no known model (hidden size / layer count match none)"))


@app.command("apply")
def apply(
    base: str = typer.Argument(..., help="Base transformer: a SAT checkpoint folder, or a model name (see `cogvid models list`)."),
    lora: Path = typer.Argument(..., help="SAT LoRA checkpoint folder."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="New folder for the merged checkpoint (must not exist)."),
    scale: float = typer.Option(1.0, "--scale", help="Strength: multiplies the LoRA's own lora_alpha / r (1 = as trained)."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="DIR", help="Weights root for a model name (default: $COGVID_WEIGHTS or ~/.cache/cogvid/models)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
) -> None:
    """Merge a LoRA into a base transformer and write a plain SAT checkpoint (no LoRA keys).

    The result loads like any transformer folder (in cogvid and in the original SAT code).

    Example: cogvid lora apply cogvideox-5b ckpts/lora-09-09-21-10 --out merged/transformer --scale 0.8
    """
    import math

    from cogvid.checkpoint import read_state_dict, split_engine_state
    from cogvid.errors import UsageError
    from cogvid.lora import LoraSpec, base_difference, merge_checkpoint, parse_specs

    if not math.isfinite(scale):
        raise UsageError(f"--scale must be a finite number, got {scale}")
    base_path = _resolve_base(base, weights)
    (spec,) = parse_specs([LoraSpec(lora, scale)])
    started = time.perf_counter()
    written, (weights_read,) = merge_checkpoint(base_path, [spec], out)
    seconds = time.perf_counter() - started
    difference = base_difference(weights_read, split_engine_state(read_state_dict(base_path))["dit"])
    if difference is not None and difference > 1e-2:
        console.warn(
            f"the LoRA's own base weights differ from {base_path} (max |diff| {difference:.3g} in layer 0 qkv): "
            "it was probably trained on another model"
        )
    result = {
        "path": str(out),
        "file": str(written),
        "base": str(base_path),
        "lora": str(weights_read.source),
        "scale": scale,
        "scaling": weights_read.scaling * scale,
        "rank": weights_read.rank,
        "layers": len(weights_read.layers),
        "seconds": round(seconds, 3),
    }
    if as_json:
        console.print_json(result)
        return
    console.out.print(str(out))
    console.err.print(
        f"merged rank-{weights_read.rank} LoRA ({len(weights_read.layers)} layers, scale {scale:g} x {weights_read.scaling:.6g}) "
        f"into {base_path} in {seconds:.1f} s"
    )


def _resolve_base(base: str, weights: Optional[Path]) -> Path:
    """A folder as given, else a registry model's transformer folder under the weights root."""
    from cogvid.errors import MissingFileError
    from cogvid.registry import get_model, load_registry

    path = Path(base).expanduser()
    if path.exists():
        return path
    if base in load_registry():
        folder = get_model(base).weight_paths(weights)["transformer"]
        if not folder.exists():
            raise MissingFileError(
                f"the transformer of {base} is not at {folder}",
                hint=f"download it (`cogvid models show {base}`) or pass --weights DIR",
            )
        return folder
    raise MissingFileError(
        f"base {base!r} is neither an existing checkpoint folder nor a known model name",
        hint="pass a SAT transformer folder (holding 'latest') or a name from `cogvid models list`",
    )
