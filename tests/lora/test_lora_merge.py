"""LoRA merge-at-load against SAT's own runtime LoRA (LoraMixin / LoraLinear forward), fp32, tiny DiTs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures.margins import assert_beyond, assert_within
from fixtures.sat_roundtrip import fixed_inputs
from fixtures.tiny_dit import tiny_network_config, write_tiny_dit
from fixtures.tiny_lora import write_tiny_lora

from cogvid.checkpoint import read_state_dict
from cogvid.dit import load_dit
from cogvid.lora import LoraSpec, apply_loras_, load_loras, merge_checkpoint, read_lora

RANK = 4
# Max abs error of the DiT output, merged weights vs SAT's runtime LoRA (another summation order);
# measured with tools/check_portability.py (ATEN default/avx2/avx512, oneDNN and MKL AVX2, 1-2
# threads): max 1.4e-6. The LoRA itself moves the output by 2e-2 or more.
TOLERANCE = 1e-5


def run(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**fixed_inputs(model.in_channels))


def runtime_config(variant: str, alpha: float, layers: list[int] | None = None) -> dict:
    """The tiny DiT with SAT's LoraMixin; ``alpha`` = SAT lora_alpha (user scale folded in)."""
    config = tiny_network_config(variant, lora_r=RANK)
    params = config["params"]["modules"]["lora_config"]["params"]
    params["lora_alpha"] = alpha
    if layers is not None:
        params["layer_range"] = layers
    return config


def merged_model(variant: str, base: str, specs: list[LoraSpec]) -> torch.nn.Module:
    model = load_dit(tiny_network_config(variant), base, dtype=torch.float32)
    apply_loras_(model, load_loras(specs))
    return model


@pytest.mark.parametrize(
    ("variant", "scale", "alpha", "layers"),
    [("5b", 1.0, None, None), ("2b", 0.5, None, None), ("5b", 1.7, 2.0, None), ("1.5", 1.0, None, [1])],
)
def test_merged_equals_sat_runtime_lora(tmp_path, variant, scale, alpha, layers):
    base = tmp_path / "base"
    write_tiny_dit(base, variant, seed=1)
    write_tiny_lora(tmp_path / "lora", read_dit(base), RANK, seed=2, alpha=alpha, layers=layers)

    runtime = load_dit(runtime_config(variant, (alpha or 1.0) * scale, layers), tmp_path / "lora", dtype=torch.float32)
    expected = run(runtime)
    merged = run(merged_model(variant, str(base), [LoraSpec(tmp_path / "lora", scale)]))
    plain = run(load_dit(tiny_network_config(variant), base, dtype=torch.float32))

    assert_within(merged, expected, TOLERANCE, "merged vs runtime")
    assert_beyond(plain, expected, 100 * TOLERANCE, "no LoRA")  # the LoRA changes the output noticeably (>= 2.1e-2)


def test_scale_zero_is_the_base(tmp_path):
    base = tmp_path / "base"
    write_tiny_dit(base, "5b", seed=1)
    write_tiny_lora(tmp_path / "lora", read_dit(base), RANK, seed=2)
    plain = run(load_dit(tiny_network_config("5b"), base, dtype=torch.float32))
    zero = run(merged_model("5b", str(base), [LoraSpec(tmp_path / "lora", 0.0)]))
    assert torch.equal(zero, plain)


def test_two_loras_at_once_equal_merging_both(tmp_path):
    base = tmp_path / "base"
    write_tiny_dit(base, "5b", seed=1)
    state = read_dit(base)
    write_tiny_lora(tmp_path / "a", state, RANK, seed=2)
    write_tiny_lora(tmp_path / "b", state, 2, seed=3, alpha=3.0)
    specs = [LoraSpec(tmp_path / "a", 0.7), LoraSpec(tmp_path / "b", -1.3)]
    together = run(merged_model("5b", str(base), specs))

    merge_checkpoint(base, specs[:1], tmp_path / "step1")
    merge_checkpoint(tmp_path / "step1", specs[1:], tmp_path / "step2")
    one_by_one = run(load_dit(tiny_network_config("5b"), tmp_path / "step2", dtype=torch.float32))
    only_a = run(merged_model("5b", str(base), specs[:1]))

    assert_within(together, one_by_one, TOLERANCE, "together vs one by one")
    assert_beyond(together, only_a, 1e-2, "first LoRA only")  # the second LoRA contributes


def test_merge_is_fp32_then_cast_like_sat(tmp_path):
    """bf16 base: W + delta is formed in fp32 and rounded once (SAT merge_linear_lora)."""
    base = tmp_path / "base"
    write_tiny_dit(base, "5b", seed=1)
    write_tiny_lora(tmp_path / "lora", read_dit(base), RANK, seed=2)
    model = load_dit(tiny_network_config("5b"), base, dtype=torch.bfloat16)
    before = model.transformer.layers[1].attention.dense.weight.detach().clone()
    apply_loras_(model, load_loras([LoraSpec(tmp_path / "lora", 1.0)]))
    lora = read_lora(tmp_path / "lora")
    expected = (before.float() + lora.delta(1, "dense")).to(torch.bfloat16)
    assert torch.equal(model.transformer.layers[1].attention.dense.weight, expected)
    assert lora.scaling == pytest.approx(1 / RANK)


def read_dit(folder: Path | str) -> dict[str, torch.Tensor]:
    from cogvid.checkpoint import split_engine_state

    return split_engine_state(read_state_dict(folder))["dit"]


def test_cogvid_load_merges_loras_at_load_time(tmp_path):
    import cogvid
    from cogvid.registry import get_model

    demo = get_model("test-tiny").weight_paths()["transformer"]
    base = read_dit(demo)
    write_tiny_lora(tmp_path / "lora", base, RANK, seed=3)
    pipe = cogvid.load(device="cpu", dtype="fp32", lora=[f"{tmp_path / 'lora'}:0.5"])
    assert pipe.engine.loras == (LoraSpec(tmp_path / "lora", 0.5),)
    lora = read_lora(tmp_path / "lora")
    for layer in (0, 1):
        for projection in ("query_key_value", "dense"):
            key = f"transformer.layers.{layer}.attention.{projection}.weight"
            expected = base[key].float() + lora.delta(layer, projection, 0.5)
            got = getattr(pipe.engine.network.transformer.layers[layer].attention, projection).weight
            assert torch.equal(got, expected), key
