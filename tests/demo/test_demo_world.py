"""The synthetic world of the demo model: reproducible clips, a parseable grammar, a clean split."""

from __future__ import annotations

import numpy as np
import pytest

import demo_world as world


def test_clips_are_reproducible_from_the_seed():
    first, texts_a, _ = world.random_batch(np.random.default_rng(7), 4)
    again, texts_b, _ = world.random_batch(np.random.default_rng(7), 4)
    other, _, _ = world.random_batch(np.random.default_rng(8), 4)
    assert first.shape == (4, world.FRAMES, world.SIZE, world.SIZE, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert texts_a == texts_b
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("direction", list(world.DIRECTIONS))
def test_object_moves_in_the_captioned_direction_and_stays_inside(direction):
    rng = np.random.default_rng(0)
    for shape in world.SHAPES:
        spec = world.sample_spec(world.Attributes("red", shape, direction, "black"), rng)
        clip = world.render(spec)
        assert clip[:, 0].max() == 0 and clip[:, -1].max() == 0  # top and bottom rows: background only
        assert clip[:, :, 0].max() == 0 and clip[:, :, -1].max() == 0  # left and right columns too
        weight = clip[..., 0].astype(float)  # red channel: the object on black
        ys, xs = np.mgrid[: world.SIZE, : world.SIZE]
        track = np.stack([(weight * xs).sum((1, 2)), (weight * ys).sum((1, 2))], 1) / weight.sum((1, 2))[:, None]
        moved = track[-1] - track[0]
        expected = np.array(world.DIRECTIONS[direction], dtype=float)
        assert moved @ expected >= world.MIN_TRAVEL - 0.5
        assert abs(moved @ expected[::-1]) < 0.5  # nothing across the motion


def test_shapes_have_their_area():
    side, centre = 16.0, (16.0, 16.0)
    area = {shape: world.shape_mask(shape, centre, side).sum() / side**2 for shape in world.SHAPES}
    assert area["square"] == pytest.approx(1.0, abs=0.02)
    assert area["circle"] == pytest.approx(np.pi / 4, abs=0.02)
    assert area["triangle"] == pytest.approx(0.5, abs=0.02)


def test_every_caption_parses_back_to_its_attributes():
    for attrs in world.all_attributes():
        for text in world.captions_of(attrs):
            assert world.parse_caption(text) == attrs
    assert world.parse_caption("A Yellow Square moving down") == world.Attributes("yellow", "square", "down", "white")


@pytest.mark.parametrize("text", ["a red blue circle moving left", "a red circle", "a circle moving up", "something else"])
def test_parse_rejects_captions_without_exactly_one_of_each(text):
    with pytest.raises(ValueError):
        world.parse_caption(text)


def test_held_out_split_is_disjoint_and_uses_only_known_words():
    train = world.split_captions(held_out=False)
    held = world.split_captions(held_out=True)
    assert len(held) >= 50 and len(train) > len(held)
    assert not {a for _, a in train} & {a for _, a in held}
    train_words = {w for text, _ in train for w in text.split()}
    assert {w for text, _ in held for w in text.split()} <= train_words
    seen_triples = {(a.color, a.shape, a.direction) for _, a in train}
    assert len(seen_triples) == len(world.COLORS) * len(world.SHAPES) * len(world.DIRECTIONS)
    picked = world.held_out_captions(50)
    assert len({t for t, _ in picked}) == 50 and picked == world.held_out_captions(50)
