"""Regression guard: the shipped trained demo model follows held-out captions (judged automatically).

Runs the model folder cogvid/demo/cogvideox-tiny-trained through the public API on held-out
captions. Measured with benchmarks/judge.py (seed 0, this CPU; numbers in README.md): default
sampler and guidance on 50 captions colour 1.00, direction 1.00, shape 0.86; guidance 1: shape
0.78. The thresholds sit a few clips below those numbers (other CPUs round differently), so a real
drop in quality fails here. Chance is 1/4 for colour and direction, 1/3 for shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import demo_world as world
import judge

MODEL_DIR = Path(__file__).resolve().parents[2] / "cogvid" / "demo" / "cogvideox-tiny-trained"
CAPTIONS = 50
SAMPLER_CAPTIONS = 24

#: Shape accuracy each non-default sampler must reach on 24 held-out captions, with the model's
#: guidance (measured: 0.75-0.79 for all of them, lms 0.58; colour and direction 1.00 each).
SAMPLER_SHAPE = {
    "vpode-dpmpp2m": 0.66,
    "ddim": 0.66,
    "euler-edm": 0.66,
    "heun-edm": 0.66,
    "euler-ancestral": 0.66,
    "dpmpp2s-ancestral": 0.66,
    "dpmpp2m": 0.66,
    "sde-dpmpp2m": 0.66,
    "lms": 0.5,  # the linear multistep sampler is the weakest here (zero-SNR start, few history terms)
}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    import cogvid

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from a second thread and loses much on a busy machine
    yield cogvid.load(configs=judge.configs_for_folder(MODEL_DIR, tmp_path_factory.mktemp("configs")), device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def default_scores(pipe):
    """Accuracy with the model's own sampler and guidance on 50 held-out captions."""
    return judge.evaluate(pipe, world.held_out_captions(CAPTIONS), seed=0)


def _failed(rows: list[dict]) -> list[str]:
    return [row["caption"] + " -> " + str(row["read"]) for row in rows if not all(row[n] for n in judge.ATTRIBUTES)]


def test_shipped_files_are_small_and_complete():
    files = [p for p in MODEL_DIR.rglob("*") if p.is_file()]
    names = {p.relative_to(MODEL_DIR).as_posix() for p in files}
    assert {"model.yaml", "inference.yaml", "transformer/latest", "transformer/1/mp_rank_00_model_states.pt", "vae/3d-vae.pt",
            "t5-v1_1-xxl/spiece.model", "t5-v1_1-xxl/config.json"} <= names
    assert sum(p.stat().st_size for p in files) < 20e6


def test_bundled_configs_are_the_shipped_folders():
    bundled = Path(__file__).resolve().parents[2] / "configs"
    assert (bundled / "models" / "cogvideox_tiny.yaml").read_text() == (MODEL_DIR / "model.yaml").read_text()
    assert (bundled / "inference" / "cogvideox_tiny.yaml").read_text() == (MODEL_DIR / "inference.yaml").read_text()


@pytest.mark.slow
def test_trained_model_follows_held_out_captions(pipe, default_scores):
    scores, rows = default_scores
    assert np.asarray(pipe.generate("a red circle moving left", seed=0).frames).shape == (world.FRAMES, world.SIZE, world.SIZE, 3)
    assert scores["color"] >= 0.94, _failed(rows)
    assert scores["direction"] >= 0.94, _failed(rows)
    assert scores["shape"] >= 0.78, _failed(rows)  # measured 0.86; the goal is 0.70


@pytest.mark.slow
def test_guidance_gives_the_expected_gain(pipe, default_scores):
    """Without guidance (scale 1) colour and motion still follow the caption; the shape less often."""
    guided, _ = default_scores
    unguided, rows = judge.evaluate(pipe, world.held_out_captions(CAPTIONS), guidance=1.0, seed=0)
    assert unguided["color"] >= 0.94 and unguided["direction"] >= 0.94, _failed(rows)
    assert guided["shape"] >= unguided["shape"] + 0.04, (guided, unguided)  # measured 0.86 vs 0.78


@pytest.mark.slow
@pytest.mark.parametrize("sampler", sorted(SAMPLER_SHAPE))
def test_every_sampler_follows_held_out_captions(pipe, sampler):
    scores, rows = judge.evaluate(pipe, world.held_out_captions(SAMPLER_CAPTIONS), sampler=sampler, seed=0)
    assert scores["color"] >= 0.9 and scores["direction"] >= 0.9, _failed(rows)
    assert scores["shape"] >= SAMPLER_SHAPE[sampler], _failed(rows)


def test_every_sampler_is_covered():
    from cogvid.diffusion import SAMPLER_NAMES

    default = "vpsde-dpmpp2m"  # the model's sampler_config, judged by the tests above
    assert set(SAMPLER_NAMES) == set(SAMPLER_SHAPE) | {default}
