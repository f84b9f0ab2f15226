"""Real-size DiTs built on the meta device: released key set, shapes and parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cogvid.config import instantiate

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"

# name -> (hidden, layers, in-channels, 1.5?, pos kind, LoRA rank)
VARIANTS = {
    "cogvideox_2b": (1920, 30, 16, False, "sincos", None),
    "cogvideox_5b": (3072, 42, 16, False, "rope", None),
    "cogvideox_5b_i2v": (3072, 42, 32, False, "learned", None),
    "cogvideox1.5_5b": (3072, 42, 16, True, "rope", None),
    "cogvideox1.5_5b_i2v": (3072, 42, 32, True, "rope", None),
    "cogvideox_2b_lora": (1920, 30, 16, False, "sincos", 128),
    "cogvideox_5b_lora": (3072, 42, 16, False, "rope", 128),
    "cogvideox_5b_i2v_lora": (3072, 42, 32, False, "learned", 256),
}

# Published transformer sizes (billions of parameters, the released files' tensors):
# 2B 1.69, 5B 5.57, 5B-I2V 5.63 (incl. its learned position table), 1.5 5.57.
PUBLISHED_BILLIONS = {
    "cogvideox_2b": 1.69,
    "cogvideox_5b": 5.57,
    "cogvideox_5b_i2v": 5.63,
    "cogvideox1.5_5b": 5.57,
    "cogvideox1.5_5b_i2v": 5.57,
}


def released_keys(hidden: int, layers: int, c_in: int, is_15: bool, pos: str, lora_r: int | None) -> dict[str, tuple]:
    """The DiT keys and shapes of REFERENCE §3.1 / §1.4, written out independently of the model."""
    t_dim, keys = 512, {}
    for i in range(layers):
        p = f"transformer.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            keys[p + norm + ".weight"] = keys[p + norm + ".bias"] = (hidden,)
        for name, (rows, cols) in (("attention.query_key_value", (3 * hidden, hidden)), ("attention.dense", (hidden, hidden))):
            if lora_r is None:
                keys[p + name + ".weight"], keys[p + name + ".bias"] = (rows, cols), (rows,)
            else:
                keys[p + name + ".original.weight"], keys[p + name + ".original.bias"] = (rows, cols), (rows,)
                parts = 3 if "query_key_value" in name else 1
                for j in range(parts):
                    keys[p + name + f".matrix_A.{j}"] = (lora_r, hidden)
                    keys[p + name + f".matrix_B.{j}"] = (rows // parts, lora_r)
        keys[p + "mlp.dense_h_to_4h.weight"], keys[p + "mlp.dense_h_to_4h.bias"] = (4 * hidden, hidden), (4 * hidden,)
        keys[p + "mlp.dense_4h_to_h.weight"], keys[p + "mlp.dense_4h_to_h.bias"] = (hidden, 4 * hidden), (hidden,)
        keys[f"mixins.adaln_layer.adaLN_modulations.{i}.1.weight"] = (12 * hidden, t_dim)
        keys[f"mixins.adaln_layer.adaLN_modulations.{i}.1.bias"] = (12 * hidden,)
        for which in ("query", "key"):
            keys[f"mixins.adaln_layer.{which}_layernorm_list.{i}.weight"] = (64,)
            keys[f"mixins.adaln_layer.{which}_layernorm_list.{i}.bias"] = (64,)
    keys["transformer.final_layernorm.weight"] = keys["transformer.final_layernorm.bias"] = (hidden,)
    keys["time_embed.0.weight"], keys["time_embed.0.bias"] = (t_dim, hidden), (t_dim,)
    keys["time_embed.2.weight"], keys["time_embed.2.bias"] = (t_dim, t_dim), (t_dim,)
    keys["mixins.patch_embed.proj.weight"] = (hidden, c_in * 8) if is_15 else (hidden, c_in, 2, 2)
    keys["mixins.patch_embed.proj.bias"] = (hidden,)
    keys["mixins.patch_embed.text_proj.weight"], keys["mixins.patch_embed.text_proj.bias"] = (hidden, 4096), (hidden,)
    keys["mixins.final_layer.norm_final.weight"] = keys["mixins.final_layer.norm_final.bias"] = (hidden,)
    out = 128 if is_15 else 64
    keys["mixins.final_layer.linear.weight"], keys["mixins.final_layer.linear.bias"] = (out, hidden), (out,)
    keys["mixins.final_layer.adaLN_modulation.1.weight"] = (2 * hidden, t_dim)
    keys["mixins.final_layer.adaLN_modulation.1.bias"] = (2 * hidden,)
    if pos in ("sincos", "learned"):
        keys["mixins.pos_embed.pos_embedding"] = (1, 226 + 13 * 30 * 45, hidden)
    if pos != "sincos":
        keys["transformer.position_embeddings.weight"] = (64, hidden)
    if pos != "sincos" and not is_15:
        keys["mixins.pos_embed.freqs_sin"] = keys["mixins.pos_embed.freqs_cos"] = (13 * 30 * 45, 64)
    if is_15 and c_in == 32:
        for j in (0, 2):
            keys[f"ofs_embed.{j}.weight"], keys[f"ofs_embed.{j}.bias"] = (512, 512), (512,)
    return keys


@pytest.mark.parametrize("name", list(VARIANTS))
def test_real_size_key_set_and_shapes(name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    model = instantiate(cfg.model.network_config, dtype="bf16", device="meta")
    found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = released_keys(*VARIANTS[name])
    assert sorted(set(found) ^ set(expected)) == []
    assert {k: v for k, v in found.items() if expected[k] != v} == {}
    assert all(t.is_meta for t in model.state_dict().values())
    assert list(model.mixins) == ["pos_embed", "patch_embed", "adaln_layer", "final_layer"] + (["lora"] if VARIANTS[name][5] else [])


@pytest.mark.parametrize("name", list(PUBLISHED_BILLIONS))
def test_parameter_count_matches_published_size(name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    model = instantiate(cfg.model.network_config, dtype="bf16", device="meta")
    optional = model.optional_state_keys()
    count = sum(v.numel() for k, v in model.state_dict().items() if k not in optional)
    assert round(count / 1e9, 2) == PUBLISHED_BILLIONS[name]


def test_lora_scale_is_one_over_rank():
    cfg = OmegaConf.load(CONFIGS / "cogvideox_5b_i2v_lora.yaml")
    model = instantiate(cfg.model.network_config, dtype="fp32", device="meta")
    qkv = model.transformer.layers[0].attention.query_key_value
    assert qkv.scaling == pytest.approx(1 / 256)
