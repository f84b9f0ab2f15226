"""Draw the README's frame strip: every frame of three demo videos, one row each (docs/demo-strip.png).

Usage: python tools/demo_strip.py [--model-dir DIR] [--out docs/demo-strip.png]

Each row is ``cogvid`` with the demo model's default settings and seeds 1, 2, 3 for the captions in
``CAPTIONS``, frames enlarged 3x (bicubic) and laid side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = (
    "a red circle moving left",
    "a blue triangle moving up on a black background",
    "a yellow square moving right on a gray background",
)
SCALE = 3


def strip(rows: list[np.ndarray], scale: int = SCALE) -> np.ndarray:
    """(T, H, W, 3) uint8 clips -> one image (rows x H*scale, T x W*scale, 3)."""
    from PIL import Image

    lines = []
    for frames in rows:
        enlarged = [
            np.asarray(Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.BICUBIC))
            for frame in frames
        ]
        lines.append(np.concatenate(enlarged, axis=1))
    return np.concatenate(lines, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="a model folder (default: the shipped cogvideox-tiny)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo-strip.png")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import judge
    from PIL import Image

    with tempfile.TemporaryDirectory() as scratch:
        pipe = judge.load_pipeline(None if args.model_dir else "cogvideox-tiny", args.model_dir, Path(scratch))
        rows = [np.asarray(pipe.generate(text, seed=seed).frames) for seed, text in enumerate(CAPTIONS, start=1)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip(rows)).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
