"""Regression guard: the shipped trained demo model follows held-out captions (judged automatically).

Runs the model folder cogvid/demo/cogvideox-tiny-trained through the public API on 16
held-out captions with the default sampler and guidance; the thresholds sit below the accuracy
measured on 50 captions (benchmarks/judge.py), so a drop in quality fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import demo_world as world
import judge

MODEL_DIR = Path(__file__).resolve().parents[2] / "cogvid" / "demo" / "cogvideox-tiny-trained"
CAPTIONS = 16  # measured (seed 0, default sampler): colour 16/16, direction 16/16, shape 9/16


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    import cogvid

    return cogvid.load(configs=judge.configs_for_folder(MODEL_DIR, tmp_path_factory.mktemp("configs")), device="cpu")


def test_shipped_files_are_small_and_complete():
    files = [p for p in MODEL_DIR.rglob("*") if p.is_file()]
    names = {p.relative_to(MODEL_DIR).as_posix() for p in files}
    assert {"model.yaml", "inference.yaml", "transformer/latest", "transformer/1/mp_rank_00_model_states.pt", "vae/3d-vae.pt",
            "t5-v1_1-xxl/spiece.model", "t5-v1_1-xxl/config.json"} <= names
    assert sum(p.stat().st_size for p in files) < 20e6


@pytest.mark.slow
def test_trained_model_follows_held_out_captions(pipe):
    scores, rows = judge.evaluate(pipe, world.held_out_captions(CAPTIONS), seed=0)
    assert np.asarray(pipe.generate("a red circle moving left", seed=0).frames).shape == (world.FRAMES, world.SIZE, world.SIZE, 3)
    failed = [row["caption"] + " -> " + str(row["read"]) for row in rows if not all(row[n] for n in judge.ATTRIBUTES)]
    assert scores["color"] >= 0.9, failed
    assert scores["direction"] >= 0.85, failed
    assert scores["shape"] >= 0.43, failed  # chance is 1/3
