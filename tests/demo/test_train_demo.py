"""The training tool: a few steps write a loadable model folder, reproducibly from the seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import demo_world as world
import train_demo


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_a_short_run_writes_a_model_that_loads_and_generates(tmp_path):
    import cogvid
    import judge

    out = tmp_path / "model"
    train_demo.main(["--out", str(out), "--seed", "3", "--vae-image-steps", "2", "--vae-steps", "1", "--decoder-steps", "1", "--dit-steps", "2", "--clips-per-combo", "1"])
    for part in ("model.yaml", "inference.yaml", "transformer/latest", "transformer/1/mp_rank_00_model_states.pt", "vae/3d-vae.pt",
                 "t5-v1_1-xxl/spiece.model", "t5-v1_1-xxl/config.json"):
        assert (out / part).is_file(), part
    log = json.loads((out / "training.json").read_text())
    assert log["vae"]["image_steps"] == 2 and log["vae"]["video_steps"] == 1 and log["decoder"]["steps"] == 1
    assert log["dit"]["steps"] == 2 and log["seed"] == 3

    from transformers import T5EncoderModel, T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(str(out / "t5-v1_1-xxl"))
    ids = tokenizer("a yellow triangle sliding right over a black background").input_ids
    assert len(ids) == 10 and tokenizer.unk_token_id not in ids  # one token per word + </s>
    assert T5EncoderModel.from_pretrained(str(out / "t5-v1_1-xxl")).config.d_model == train_demo.T5_WIDTH

    pipe = cogvid.load(configs=judge.configs_for_folder(out, tmp_path), device="cpu")
    video = pipe.generate("a red circle moving left", steps=2, seed=0)
    assert np.asarray(video.frames).shape == (world.FRAMES, world.SIZE, world.SIZE, 3)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_weights(tmp_path):
    for name in ("a", "b"):
        train_demo.main(["--out", str(tmp_path / name), "--seed", "1", "--stages", "vae,t5", "--vae-image-steps", "1", "--vae-steps", "1"])
    first, second = _state(tmp_path / "a/vae/3d-vae.pt")["state_dict"], _state(tmp_path / "b/vae/3d-vae.pt")["state_dict"]
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert (tmp_path / "a/t5-v1_1-xxl/spiece.model").read_bytes() == (tmp_path / "b/t5-v1_1-xxl/spiece.model").read_bytes()
    assert (tmp_path / "a/t5-v1_1-xxl/model.safetensors").read_bytes() == (tmp_path / "b/t5-v1_1-xxl/model.safetensors").read_bytes()
