"""``cogvid models list|show``: what models cogvid knows and whether their weights are present."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cogvid.cli import console
from cogvid.cli.options import complete_model

app = typer.Typer(help="List the known models and inspect one.", no_args_is_help=True)

WeightsOption = typer.Option(
    None,
    "--weights",
    metavar="DIR",
    help="Weights root (default: $COGVID_WEIGHTS or ~/.cache/cogvid/models).",
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


@app.command("list")
def list_models(
    weights: Optional[Path] = WeightsOption,
    as_json: bool = JsonOption,
) -> None:
    """Show every known model: task, size, default size x frames @ fps, dtype, weights found or missing.

    Example: cogvid models list --weights /data/cogvideox
    """
    from cogvid.registry import load_registry, weights_root

    entries = list(load_registry().values())
    summaries = [entry.summary(weights) for entry in entries]
    if as_json:
        console.print_json({"weights_root": str(weights_root(weights)), "models": summaries})
        return

    from rich.table import Table

    table = Table(title=f"Models (weights root: {weights_root(weights)})", title_justify="left")
    for column in ("name", "task", "params", "default size x frames @ fps", "dtype", "weights"):
        table.add_column(column, overflow="fold")
    missing_lines = []
    for entry, summary in zip(entries, summaries):
        if summary["weights_found"]:
            status = "[green]found[/]"
        else:
            status = "[red]missing[/]"
            missing = [part for part, info in summary["weights"].items() if not info["found"]]
            missing_lines.append(f"{entry.name}: missing {', '.join(missing)} at {summary['model_dir']}")
        table.add_row(
            entry.name,
            entry.task,
            entry.parameters,
            f"{entry.width}x{entry.height} x {entry.frames} @ {entry.fps}",
            entry.dtype,
            status,
        )
    console.out.print(table)
    for line in missing_lines:
        console.out.print(line, soft_wrap=True)
    if missing_lines:
        console.err.print("Where to download the missing weights: cogvid models show NAME")


@app.command("show")
def show_model(
    name: str = typer.Argument(..., help="Model name (see `cogvid models list`).", autocompletion=complete_model),
    weights: Optional[Path] = WeightsOption,
    config: list[Path] = typer.Option(
        [], "--config", metavar="FILE", help="Extra YAML merged over the model's own (repeatable)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="Override one dotted key, e.g. args.sampling_fps=16 (repeatable)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show one model: merged configuration, weight paths (found / missing) and where to download them.

    With --config and --set it shows the configuration a generation would use.

    Example: cogvid models show cogvideox-5b --set args.sampling_num_frames=11
    """
    from omegaconf import OmegaConf

    from cogvid.prepare import resolve_model
    from cogvid.request import ModelChoice

    resolved = resolve_model(ModelChoice(name, weights, tuple(config), tuple(overrides)))
    entry, cfg, spec = resolved.entry, resolved.cfg, resolved.spec
    summary = entry.summary(weights)
    summary["description"] = entry.description
    summary["config_files"] = [str(p) for p in entry.config_files()]
    # What a generation with this configuration uses unless --frames / --size / --fps say otherwise
    # (image-to-video: the size follows the image).
    t2v = entry.task == "t2v"
    summary["generation_defaults"] = {
        "frames": spec.default_frames,
        "fps": spec.fps,
        "height": spec.default_height if t2v else None,
        "width": spec.default_width if t2v else None,
    }
    if as_json:
        summary["config"] = OmegaConf.to_container(cfg, resolve=True)
        console.print_json(summary)
        return

    from rich.panel import Panel
    from rich.syntax import Syntax

    out = console.out
    out.print(f"[bold]{entry.title}[/] ({entry.name}) — {entry.description}")
    out.print(
        f"task {entry.task} · CogVideoX {entry.generation} · {entry.parameters} parameters · "
        f"{entry.width}x{entry.height} x {entry.frames} frames @ {entry.fps} fps · {entry.dtype}"
    )
    run = summary["generation_defaults"]
    if (run["frames"], run["fps"]) != (entry.frames, entry.fps) or t2v and (run["height"], run["width"]) != (entry.height, entry.width):
        size = f"{run['width']}x{run['height']}" if t2v else "the image's size"
        out.print(f"with this configuration: {size} x {run['frames']} frames @ {run['fps']} fps")
    out.print("config files: " + ", ".join(summary["config_files"]))
    out.print(f"\n[bold]Weights[/] in {summary['model_dir']}:")
    for part, info in summary["weights"].items():
        mark = "[green]found  [/]" if info["found"] else "[red]missing[/]"
        out.print(f"  {mark} {part:<12} {info['path']}")
    if not summary["weights_found"] and entry.download:
        out.print("\n[bold]Download[/] (then place the files as above):")
        for part, where in entry.download.items():
            out.print(f"  {part:<12} {where.replace('<folder>', summary['model_dir'])}")
    out.print()
    out.print(Panel(Syntax(OmegaConf.to_yaml(cfg), "yaml", word_wrap=True), title="merged configuration"))
