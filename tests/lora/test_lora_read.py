"""--lora value parsing and what read_lora takes from the checkpoint and the run's config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.tiny_dit import random_dit_state
from fixtures.tiny_lora import write_tiny_lora

from cogvid.errors import CheckpointError, UsageError
from cogvid.lora import LoraSpec, read_lora


def test_parse_path_and_scale(tmp_path):
    assert LoraSpec.parse("runs/my-lora") == LoraSpec(Path("runs/my-lora"), 1.0)
    assert LoraSpec.parse("runs/my-lora:0.5") == LoraSpec(Path("runs/my-lora"), 0.5)
    assert LoraSpec.parse("runs/my-lora:-1e-1").scale == pytest.approx(-0.1)
    odd = tmp_path / "run:v2"
    odd.mkdir()
    assert LoraSpec.parse(str(odd)) == LoraSpec(odd, 1.0)  # an existing folder with a colon in its name
    assert LoraSpec.parse(f"{odd}:2").scale == 2.0
    for bad in ("runs/my-lora:strong", "runs/my-lora:nan", ":0.5", "runs/my-lora:1e30", "runs/my-lora:-11"):
        with pytest.raises(UsageError):
            LoraSpec.parse(bad)
    assert LoraSpec.parse("a:0.25").to_json() == {"path": "a", "scale": 0.25}


def test_rank_from_matrices_and_alpha_default_without_config(tmp_path):
    write_tiny_lora(tmp_path / "lora", random_dit_state("5b", 1), 6, seed=2, write_rank=False)
    (tmp_path / "lora" / "training_config.yaml").unlink()
    lora = read_lora(tmp_path / "lora")
    assert lora.rank == 6 and lora.alpha == 1.0 and lora.scaling == pytest.approx(1 / 6)
    assert lora.alpha_from.startswith("default")


def test_alpha_from_model_config_json(tmp_path):
    write_tiny_lora(tmp_path / "lora", random_dit_state("5b", 1), 4, seed=2, write_rank=False)
    (tmp_path / "lora" / "model_config.json").write_text(json.dumps({"lora_rank": 4, "lora_alpha": 8}))
    lora = read_lora(tmp_path / "lora" / "1000" / "mp_rank_00_model_states.pt")  # the .pt file works too
    assert lora.scaling == pytest.approx(2.0) and lora.alpha_from.endswith("model_config.json")


def test_config_rank_disagreeing_with_the_matrices_is_an_error(tmp_path):
    write_tiny_lora(tmp_path / "lora", random_dit_state("5b", 1), 4, seed=2)
    config = tmp_path / "lora" / "training_config.yaml"
    config.write_text(config.read_text().replace('"r": 4', '"r": 128'))
    with pytest.raises(CheckpointError, match="r = 128, but the LoRA matrices have rank 4"):
        read_lora(tmp_path / "lora")


def test_incomplete_partition_layout_is_an_error(tmp_path):
    from cogvid.checkpoint import DIT_PREFIX, read_state_dict, save_checkpoint

    write_tiny_lora(tmp_path / "lora", random_dit_state("5b", 1), 4, seed=2)
    module = dict(read_state_dict(tmp_path / "lora"))
    del module[DIT_PREFIX + "transformer.layers.1.attention.query_key_value.matrix_B.2"]
    save_checkpoint(tmp_path / "broken", module)
    with pytest.raises(CheckpointError, match=r"layers.1.attention.query_key_value has matrix_B indices \[0, 1\]"):
        read_lora(tmp_path / "broken")


def test_lora_of_another_hidden_size_names_the_mismatch(tmp_path):
    from fixtures.tiny_dit import write_tiny_dit

    from cogvid.lora import merge_checkpoint

    write_tiny_lora(tmp_path / "wide", random_dit_state("5b", 1, hidden_size=256, num_attention_heads=4), 4, seed=2)
    write_tiny_dit(tmp_path / "base", "5b", seed=1)
    with pytest.raises(CheckpointError, match="the LoRA has hidden size 256, the model 128"):
        merge_checkpoint(tmp_path / "base", [LoraSpec(tmp_path / "wide")], tmp_path / "out")
    assert not (tmp_path / "out").exists()
