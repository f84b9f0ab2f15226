"""``cogvid lora inspect|apply``: look into a SAT LoRA checkpoint, or merge it into a base model."""

from __future__ import annotations

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
    from cogvid.finetunes import inspect_lora

    info = inspect_lora(path)
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
    from cogvid.finetunes import BASE_DRIFT, apply_lora
    from cogvid.request import LoraSpec

    result = apply_lora(base, LoraSpec(lora, scale), out, weights)
    drift = result.pop("base_drift")
    if drift is not None and drift > BASE_DRIFT:
        console.warn(
            f"the LoRA's own base weights differ from {result['base']} (max |diff| {drift:.3g} in layer 0 qkv): "
            "it was probably trained on another model"
        )
    if as_json:
        console.print_json(result)
        return
    console.out.print(result["path"], markup=False)
    console.err.print(
        f"wrote {result['path']}: {result['base']} with the rank-{result['rank']} LoRA merged "
        f"({result['layers']} layers, scale {scale:g}, effective scaling {result['scaling']:.6g}) in {result['seconds']:.1f} s",
        markup=False,
    )
