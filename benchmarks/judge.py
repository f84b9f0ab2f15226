"""Automatic judge for the demo model: does a generated clip show what its caption says?

Usage: python benchmarks/judge.py --model cogvideox-tiny [--captions 50 --sampler NAME --guidance G]
       python benchmarks/judge.py --model-dir cogvid/demo/cogvideox-tiny-trained [...]

For held-out captions of the synthetic world (tools/demo_world.py) it generates one clip each with
the public API (``cogvid.load`` / ``pipe.generate``), reads the frames back and measures:

* colour: the mean colour of the object's core pixels, nearest of the world's four colours;
* direction: the object's centroid track (least-squares slope over the frames), dominant axis;
* shape: per frame, the IoU of the object mask with a circle, square and triangle drawn in the
  mask's bounding box; the best mean IoU wins.

The object is whatever differs from the background colour (the median of the frame border).
A clip with no object scores wrong on all three. Prints a table (and ``--json`` a JSON line).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import demo_world as world  # noqa: E402

MIN_CONTRAST = 40.0  # RGB distance from the background below which nothing counts as object
MIN_PIXELS = 4  # a frame needs this many object pixels to count
ATTRIBUTES = ("color", "direction", "shape")


@dataclass
class Reading:
    """What the judge reads from one clip."""

    color: str | None
    direction: str | None
    shape: str | None
    background_rgb: tuple[float, float, float]
    object_rgb: tuple[float, float, float] | None
    track: list[tuple[float, float]] = field(default_factory=list)  # centroid (x, y) of frames with an object
    shape_iou: dict[str, float] = field(default_factory=dict)


def background_color(frames: np.ndarray, border: int = 2) -> np.ndarray:
    """Median RGB of the ``border``-pixel frame edges over all frames: frames (T, H, W, 3) -> (3,)."""
    mask = np.zeros(frames.shape[1:3], dtype=bool)
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = True, True, True, True
    border_pixels = frames[:, mask].reshape(-1, 3)  # (T, P, 3) -> (T*P, 3)
    return np.median(border_pixels.astype(np.float64), axis=0)


def object_masks(frames: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel distance from the background (T, H, W) and the object masks (T, H, W) bool.

    A pixel is object when its distance exceeds half the clip's strong contrast (99th
    percentile), and at least ``MIN_CONTRAST``: soft edges split at half coverage.
    """
    distance = np.linalg.norm(frames.astype(np.float64) - background, axis=-1)
    strong = float(np.percentile(distance, 99))
    threshold = max(MIN_CONTRAST, 0.5 * strong)
    return distance, distance > threshold


def nearest_color(rgb: np.ndarray) -> str:
    """The world colour nearest to ``rgb`` (Euclidean in RGB)."""
    names = list(world.COLORS)
    palette = np.array([world.COLORS[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def direction_of(track: np.ndarray) -> str | None:
    """Dominant direction of a centroid track (N, 2) (x right, y down); None if it does not move."""
    if len(track) < 2:
        return None
    steps = np.arange(len(track), dtype=np.float64)
    steps -= steps.mean()
    slope = (steps[:, None] * (track - track.mean(axis=0))).sum(axis=0) / (steps**2).sum()  # pixels per frame, (2,)
    if np.abs(slope).max() < 0.2:
        return None
    if abs(slope[0]) >= abs(slope[1]):
        return "right" if slope[0] > 0 else "left"
    return "down" if slope[1] > 0 else "up"


def shape_scores(mask: np.ndarray) -> dict[str, float] | None:
    """IoU of one frame's mask (H, W) with each shape drawn in the mask's bounding box."""
    ys, xs = np.nonzero(mask)
    if len(xs) < MIN_PIXELS:
        return None
    left, right, top, bottom = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    centre = ((left + right) / 2.0, (top + bottom) / 2.0)
    side = float(max(right - left, bottom - top))
    height, width = mask.shape
    size = max(height, width)  # draw on a square grid, then crop to the frame
    scores = {}
    for shape in world.SHAPES:
        template = world.shape_mask(shape, centre, side, size)[:height, :width] >= 0.5
        union = np.logical_or(template, mask).sum()
        scores[shape] = float(np.logical_and(template, mask).sum() / union) if union else 0.0
    return scores


def read_clip(frames: np.ndarray) -> Reading:
    """Read colour, direction and shape from a clip: uint8 (T, H, W, 3)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {frames.shape}")
    background = background_color(frames)
    distance, masks = object_masks(frames, background)
    present = [t for t in range(len(frames)) if masks[t].sum() >= MIN_PIXELS]
    if not present:
        return Reading(None, None, None, tuple(background.tolist()), None)
    # Core pixels (well inside the object) carry its colour without edge blending.
    core = np.stack([masks[t] & (distance[t] >= 0.75 * distance[t][masks[t]].max()) for t in present])  # (N, H, W)
    pixels = frames[present][core].astype(np.float64)  # (P, 3)
    object_rgb = pixels.mean(axis=0)
    track = []
    for t in present:
        ys, xs = np.nonzero(masks[t])
        track.append((float(xs.mean()) + 0.5, float(ys.mean()) + 0.5))
    per_frame = [s for s in (shape_scores(masks[t]) for t in present) if s is not None]
    iou = {shape: float(np.mean([s[shape] for s in per_frame])) for shape in world.SHAPES}
    return Reading(
        color=nearest_color(object_rgb),
        direction=direction_of(np.array(track)),
        shape=max(iou, key=iou.get),
        background_rgb=tuple(background.tolist()),
        object_rgb=tuple(object_rgb.tolist()),
        track=track,
        shape_iou=iou,
    )


def judge_clip(frames: np.ndarray, expected: world.Attributes) -> dict[str, bool]:
    """Whether colour, direction and shape read from ``frames`` match ``expected``."""
    reading = read_clip(frames)
    return {name: getattr(reading, name) == getattr(expected, name) for name in ATTRIBUTES}


def accuracy(results: list[dict[str, bool]]) -> dict[str, float]:
    """Fraction correct per attribute (and ``all`` = all three right) over ``results``."""
    if not results:
        raise ValueError("no results to score")
    out = {name: float(np.mean([r[name] for r in results])) for name in ATTRIBUTES}
    out["all"] = float(np.mean([all(r[name] for name in ATTRIBUTES) for r in results]))
    return out


# ------------------------------------------------------------------------------------------
# Generation through the public API


def configs_for_folder(folder: Path, scratch: Path) -> list[Path]:
    """Copies of ``folder``'s model.yaml / inference.yaml with the weight paths made absolute."""
    from omegaconf import OmegaConf

    folder = folder.resolve()
    model = OmegaConf.load(folder / "model.yaml")
    inference = OmegaConf.load(folder / "inference.yaml")
    params = model.model.first_stage_config.params
    params.ckpt_path = str(folder / params.ckpt_path)
    embedder = model.model.conditioner_config.params.emb_models[0].params
    embedder.model_dir = str(folder / embedder.model_dir)
    inference.args.load = str(folder / inference.args.load)
    paths = [scratch / "model.yaml", scratch / "inference.yaml"]
    OmegaConf.save(model, paths[0])
    OmegaConf.save(inference, paths[1])
    return paths


def load_pipeline(model: str | None, model_dir: Path | None, scratch: Path):  # noqa: ANN201 (cogvid.VideoPipeline)
    """``cogvid.load`` by registry name, or from a model folder holding model.yaml + inference.yaml."""
    import cogvid

    if model_dir is not None:
        return cogvid.load(configs=configs_for_folder(model_dir, scratch), device="cpu")
    return cogvid.load(model, device="cpu")


def evaluate(
    pipe,  # noqa: ANN001 (cogvid.VideoPipeline)
    pairs: list[tuple[str, world.Attributes]],
    sampler: str | None = None,
    guidance: float | None = None,
    steps: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], list[dict]]:
    """Generate one clip per (caption, attributes) pair and score it; returns (accuracy, per-clip rows)."""
    rows, results = [], []
    for index, (text, attrs) in enumerate(pairs):
        video = pipe.generate(text, sampler=sampler, guidance=guidance, steps=steps, seed=seed + index)
        reading = read_clip(np.asarray(video.frames))
        result = {name: getattr(reading, name) == getattr(attrs, name) for name in ATTRIBUTES}
        results.append(result)
        rows.append({"caption": text, **result, "read": {n: getattr(reading, n) for n in ATTRIBUTES}})
    return accuracy(results), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="registry name (default: cogvideox-tiny)")
    source.add_argument("--model-dir", type=Path, default=None, help="a folder with model.yaml, inference.yaml and the weights")
    parser.add_argument("--captions", type=int, default=50, help="number of held-out captions")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line with the results")
    parser.add_argument("--verbose", action="store_true", help="print every caption and what was read")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, args.threads)))
    pairs = world.held_out_captions(args.captions)
    if len(pairs) < args.captions:
        print(f"note: only {len(pairs)} held-out captions exist", file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.time()
        pipe = load_pipeline(args.model or ("cogvideox-tiny" if args.model_dir is None else None), args.model_dir, Path(scratch))
        scores, rows = evaluate(pipe, pairs, args.sampler, args.guidance, args.steps, args.seed)
        seconds = time.time() - start
    label = str(args.model_dir) if args.model_dir is not None else (args.model or "cogvideox-tiny")
    if args.verbose:
        for row in rows:
            marks = " ".join(f"{n}={'ok' if row[n] else row['read'][n]}" for n in ATTRIBUTES)
            print(f"{row['caption']:<70} {marks}", file=sys.stderr)
    summary = {
        "model": label,
        "sampler": args.sampler or "default",
        "guidance": args.guidance if args.guidance is not None else "default",
        "steps": args.steps if args.steps is not None else "default",
        "captions": len(pairs),
        **{k: round(v, 3) for k, v in scores.items()},
        "seconds": round(seconds, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{'model':<40} {'sampler':<16} {'guid.':>6} {'n':>4} {'color':>6} {'dir.':>6} {'shape':>6} {'all':>6}")
        print(
            f"{label:<40} {summary['sampler']:<16} {str(summary['guidance']):>6} {len(pairs):>4} "
            f"{scores['color']:>6.2f} {scores['direction']:>6.2f} {scores['shape']:>6.2f} {scores['all']:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
