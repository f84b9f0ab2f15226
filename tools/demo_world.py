"""A synthetic video world for the `cogvideox-tiny` demo model: one shape moving over a plain background.

Every clip shows a single circle, square or triangle in one of four colours, moving left, right,
up or down in a straight line over a white, black or gray background. Its caption comes from a
small grammar ("a red circle moving left on a white background"). Clips are rendered with 4x4
supersampling (soft edges), are ``FRAMES`` x ``SIZE`` x ``SIZE`` RGB uint8, and depend only on
the caption's attributes and an explicit ``numpy.random.Generator`` (seeded and reproducible).

Held-out split: an attribute combination (colour, shape, direction, background) is held out when
``(colour + shape + direction + background) % 3 == 0`` (indices into the word lists below), so
every (colour, shape, direction) triple is seen in training with two of the three backgrounds and
the held-out captions test new combinations, never new words.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

SIZE = 32  # pixels, height = width
FRAMES = 9  # 8k + 1 frames: 3 latent frames for the 3D VAE
SUPERSAMPLE = 4

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 215, 40),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
DEFAULT_BACKGROUND = "white"

#: Caption templates; the last one names no background (the default, white).
TEMPLATES = (
    "a {color} {shape} moving {direction} on a {background} background",
    "a {color} {shape} sliding {direction} over a {background} background",
    "a {color} {shape} moving {direction}",
)

# Object size (bounding-box side, pixels) and how far it travels over the clip.
MIN_SIDE, MAX_SIDE = 15, 18
MIN_TRAVEL, MAX_TRAVEL = 9, 12


@dataclass(frozen=True)
class Attributes:
    """What a caption says: the object's colour, shape and motion, and the background."""

    color: str
    shape: str
    direction: str
    background: str = DEFAULT_BACKGROUND

    def index_sum(self) -> int:
        return (
            list(COLORS).index(self.color)
            + SHAPES.index(self.shape)
            + list(DIRECTIONS).index(self.direction)
            + list(BACKGROUNDS).index(self.background)
        )

    @property
    def held_out(self) -> bool:
        """True for combinations kept out of training (see the module docstring)."""
        return self.index_sum() % 3 == 0


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip: attributes plus the drawn size and path."""

    attributes: Attributes
    side: float  # bounding-box side in pixels
    start: tuple[float, float]  # centre (x, y) at frame 0, pixels
    travel: float  # distance covered between the first and the last frame, pixels


def all_attributes() -> list[Attributes]:
    """Every attribute combination, in a fixed order (colour-major)."""
    return [Attributes(*combo) for combo in itertools.product(COLORS, SHAPES, DIRECTIONS, BACKGROUNDS)]


def caption(attributes: Attributes, template: int = 0) -> str:
    """The caption of ``attributes`` with template ``template`` (the last template needs a white background)."""
    if template == len(TEMPLATES) - 1 and attributes.background != DEFAULT_BACKGROUND:
        raise ValueError(f"template {template} names no background; it only describes {DEFAULT_BACKGROUND} clips")
    return TEMPLATES[template].format(**attributes.__dict__)


def captions_of(attributes: Attributes) -> list[str]:
    """All captions that describe ``attributes``."""
    last = len(TEMPLATES) - 1
    return [caption(attributes, t) for t in range(len(TEMPLATES)) if t < last or attributes.background == DEFAULT_BACKGROUND]


def split_captions(held_out: bool) -> list[tuple[str, Attributes]]:
    """(caption, attributes) pairs of the training split (``held_out=False``) or the held-out split."""
    return [(text, attrs) for attrs in all_attributes() if attrs.held_out == held_out for text in captions_of(attrs)]


def held_out_captions(count: int | None = None, seed: int = 0) -> list[tuple[str, Attributes]]:
    """``count`` held-out (caption, attributes) pairs in a fixed shuffled order (all when None)."""
    pairs = split_captions(held_out=True)
    order = np.random.default_rng(seed).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    return pairs if count is None else pairs[:count]


_WORD = re.compile(r"[a-z]+")


def parse_caption(text: str) -> Attributes:
    """The attributes a caption names (colour, shape and direction required; background optional).

    ValueError when a required word is missing or ambiguous.
    """
    words = _WORD.findall(text.lower())

    def pick(options: list[str] | tuple[str, ...], what: str, default: str | None = None) -> str:
        found = sorted({w for w in words if w in options})
        if len(found) == 1:
            return found[0]
        if not found and default is not None:
            return default
        raise ValueError(f"caption {text!r} names {len(found)} {what}s; expected exactly one of {', '.join(options)}")

    background_words = [w for i, w in enumerate(words) if w in BACKGROUNDS and "background" in words[i + 1 : i + 2]]
    background = background_words[0] if len(background_words) == 1 else DEFAULT_BACKGROUND
    object_words = [w for w in words if w not in background_words]
    return Attributes(
        color=pick([c for c in COLORS if c in object_words], "colour"),
        shape=pick(SHAPES, "shape"),
        direction=pick(list(DIRECTIONS), "direction"),
        background=background,
    )


def sample_spec(attributes: Attributes, rng: np.random.Generator) -> ClipSpec:
    """Draw the size and path of a clip with ``attributes`` so the shape stays inside the frame."""
    side = float(rng.uniform(MIN_SIDE, MAX_SIDE))
    travel = float(rng.uniform(MIN_TRAVEL, MAX_TRAVEL))
    half = side / 2 + 1.0
    dx, dy = DIRECTIONS[attributes.direction]
    centre = []
    for step in (dx, dy):
        if step == 0:  # across the motion: anywhere inside
            centre.append(float(rng.uniform(half, SIZE - half)))
        else:  # along the motion: the whole path inside
            low, high = half, SIZE - half - travel
            offset = float(rng.uniform(low, max(low, high)))
            centre.append(offset if step > 0 else SIZE - offset)
    return ClipSpec(attributes, side, (centre[0], centre[1]), travel)


def shape_mask(shape: str, centre: tuple[float, float], side: float, size: int = SIZE, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage in [0, 1] of ``shape`` (bounding box ``side`` centred at ``centre``) on a ``size`` grid.

    Circle: inscribed disc; square: the box; triangle: apex at the top centre, base at the bottom.
    """
    fine = (np.arange(size * supersample) + 0.5) / supersample  # sample positions in pixels
    ys, xs = np.meshgrid(fine, fine, indexing="ij")
    u = (xs - centre[0]) / (side / 2)  # [-1, 1] across the box
    v = (ys - centre[1]) / (side / 2)
    if shape == "circle":
        inside = u**2 + v**2 <= 1.0
    elif shape == "square":
        inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    elif shape == "triangle":
        inside = (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    # (size*s, size*s) -> (size, s, size, s) -> mean over the supersamples
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def centres(spec: ClipSpec, frames: int = FRAMES) -> np.ndarray:
    """(frames, 2) object centres (x, y) in pixels along the straight path."""
    dx, dy = DIRECTIONS[spec.attributes.direction]
    progress = np.linspace(0.0, 1.0, frames)[:, None]  # (frames, 1)
    return np.asarray(spec.start)[None, :] + progress * spec.travel * np.array([dx, dy])[None, :]


def render(spec: ClipSpec, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """The clip of ``spec``: uint8 (frames, size, size, 3)."""
    background = np.array(BACKGROUNDS[spec.attributes.background], dtype=np.float64)
    color = np.array(COLORS[spec.attributes.color], dtype=np.float64)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for index, centre in enumerate(centres(spec, frames)):
        cover = shape_mask(spec.attributes.shape, (float(centre[0]), float(centre[1])), spec.side, size)[..., None]
        out[index] = np.round(background * (1.0 - cover) + color * cover).astype(np.uint8)
    return out


def sample_clip(attributes: Attributes, rng: np.random.Generator) -> np.ndarray:
    """Render a random clip (size and path drawn from ``rng``) showing ``attributes``."""
    return render(sample_spec(attributes, rng))


def random_batch(
    rng: np.random.Generator, count: int, held_out: bool | None = False
) -> tuple[np.ndarray, list[str], list[Attributes]]:
    """``count`` random clips (count, FRAMES, SIZE, SIZE, 3) uint8 with a random caption each.

    ``held_out``: draw from the training split (False), the held-out split (True) or all (None).
    """
    pool = [attrs for attrs in all_attributes() if held_out is None or attrs.held_out == held_out]
    clips, texts, attrs_out = [], [], []
    for _ in range(count):
        attrs = pool[int(rng.integers(len(pool)))]
        options = captions_of(attrs)
        texts.append(options[int(rng.integers(len(options)))])
        attrs_out.append(attrs)
        clips.append(sample_clip(attrs, rng))
    return np.stack(clips), texts, attrs_out


def to_model_range(clips: np.ndarray) -> np.ndarray:
    """uint8 (N, F, H, W, 3) -> float32 (N, 3, F, H, W) in [-1, 1] (the VAE's input layout)."""
    # (N, F, H, W, 3) -> (N, 3, F, H, W)
    return (clips.astype(np.float32) / 127.5 - 1.0).transpose(0, 4, 1, 2, 3)
