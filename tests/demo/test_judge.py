"""The judge reads colour, direction and shape correctly from true clips and is at chance on noise."""

from __future__ import annotations

import numpy as np

import demo_world as world
import judge


def _clips(seed: int, count: int) -> tuple[np.ndarray, list[world.Attributes]]:
    clips, _, attrs = world.random_batch(np.random.default_rng(seed), count, held_out=None)
    return clips, attrs


def test_judge_is_right_on_ground_truth_clips():
    clips, attrs = _clips(0, 60)
    results = [judge.judge_clip(clip, a) for clip, a in zip(clips, attrs)]
    assert judge.accuracy(results) == {"color": 1.0, "direction": 1.0, "shape": 1.0, "all": 1.0}


def test_judge_tolerates_blur_noise_and_other_frame_sizes():
    rng = np.random.default_rng(1)
    clips, attrs = _clips(1, 24)
    results = []
    for clip, a in zip(clips, attrs):
        soft = clip.astype(float)
        soft = (soft + np.roll(soft, 1, 1) + np.roll(soft, 1, 2) + np.roll(soft, -1, 2)) / 4  # a little blur
        soft += rng.normal(0, 8, soft.shape)
        background = np.array(world.BACKGROUNDS[a.background], dtype=float)
        wide = np.empty((clip.shape[0], world.SIZE, world.SIZE + 16, 3))
        wide[:] = background  # (T, 32, 48, 3): the clip with a margin on the right
        wide[:, :, : world.SIZE] = soft
        results.append(judge.judge_clip(np.clip(wide, 0, 255).astype(np.uint8), a))
    scores = judge.accuracy(results)
    assert scores["color"] == 1.0 and scores["direction"] == 1.0 and scores["shape"] >= 0.9


def test_judge_is_at_chance_on_noise_and_reads_nothing_from_a_blank_clip():
    rng = np.random.default_rng(2)
    combos = world.all_attributes()
    results = []
    for _ in range(48):
        noise = rng.integers(0, 256, (world.FRAMES, world.SIZE, world.SIZE, 3), dtype=np.uint8)
        results.append(judge.judge_clip(noise, combos[int(rng.integers(len(combos)))]))
    scores = judge.accuracy(results)
    assert scores["color"] <= 0.5 and scores["direction"] <= 0.5 and scores["shape"] <= 0.6
    assert scores["all"] <= 0.1
    blank = np.full((world.FRAMES, world.SIZE, world.SIZE, 3), 200, dtype=np.uint8)
    reading = judge.read_clip(blank)
    assert (reading.color, reading.direction, reading.shape) == (None, None, None)


def test_direction_reads_the_centroid_track():
    track = np.array([[20.0, 10.0], [18.0, 10.5], [16.0, 10.0], [14.0, 10.2]])
    assert judge.direction_of(track) == "left"
    assert judge.direction_of(track[:, ::-1]) == "up"
    assert judge.direction_of(np.full((5, 2), 8.0)) is None
