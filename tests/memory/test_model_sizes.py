"""The torch-free counts of cogvid.model_sizes equal the modules cogvid builds, for every released model."""

from __future__ import annotations

import pytest
import torch

from cogvid.config import instantiate, load_config
from cogvid.model_sizes import dit_size, t5_size, vae_size
from cogvid.offload import dit_blocks
from cogvid.registry import get_model

RELEASED = ["cogvideox-2b", "cogvideox-5b", "cogvideox-5b-i2v", "cogvideox1.5-5b", "cogvideox1.5-5b-i2v"]


def _numel(tensors) -> int:
    return sum(t.numel() for t in tensors)


@pytest.mark.parametrize("name", [*RELEASED, "cogvideox-tiny", "test-tiny"])
def test_counts_equal_the_built_modules(name):
    entry = get_model(name)
    cfg = load_config(entry.config_files(), defaults=entry.defaults())
    dit = instantiate(cfg.model.network_config, dtype="fp32", device="meta")
    size = dit_size(cfg.model.network_config)
    assert size.total == _numel([*dit.parameters(), *dit.buffers()])
    blocks, shared = dit_blocks(dit)
    assert len(blocks) == size.blocks
    assert size.per_block == _numel(getattr(owner, attr) for owner, attr, _ in blocks[0])
    assert size.shared == _numel(getattr(owner, attr) for owner, attr, _ in shared)
    assert size.linear_per_block == _numel(getattr(owner, attr) for owner, attr, _ in blocks[0] if getattr(owner, attr).dim() == 2)
    node = cfg.model.first_stage_config.copy()
    node.params.ckpt_path = None
    vae = instantiate(node)
    counted = vae_size(cfg.model.first_stage_config)
    assert (counted.encoder, counted.decoder) == (_numel(vae.encoder.parameters()), _numel(vae.decoder.parameters()))


def test_t5_count_reads_the_folder_config_and_equals_the_model():
    from transformers import T5EncoderModel

    entry = get_model("test-tiny")
    cfg = load_config(entry.config_files(), defaults=entry.defaults())
    folder = entry.weight_paths()["t5"]
    counted = t5_size(cfg.model.conditioner_config, folder)
    model = T5EncoderModel.from_pretrained(str(folder))
    unique = {t.data_ptr(): t for t in model.parameters()}  # the embedding is shared with the encoder's
    assert counted.total == _numel(unique.values())
    assert counted.max_length == 16


def test_t5_without_its_folder_is_the_v1_1_xxl():
    entry = get_model("cogvideox-5b")
    cfg = load_config(entry.config_files(), defaults=entry.defaults())
    counted = t5_size(cfg.model.conditioner_config, None)
    assert counted.total == 4_762_310_656  # 4.76 B: the 9.5 GB bf16 text_encoder/ of the released models
    assert counted.max_length == 226


def test_meta_build_is_free():
    """The counts above come from meta-device modules: nothing is allocated (a 5B DiT fits any test machine)."""
    entry = get_model("cogvideox-5b")
    cfg = load_config(entry.config_files(), defaults=entry.defaults())
    dit = instantiate(cfg.model.network_config, dtype="bf16", device="meta")
    assert all(p.device == torch.device("meta") for p in dit.parameters())
