"""The DiT's blocks run by cogvid.speed: exact without caches, step caches that skip what they say,
torchao int8 weights layer by layer, attention kernels and compilation checks."""

from __future__ import annotations

import pytest
import torch

from fixtures.tiny_dit import VARIANTS, random_dit_state, tiny_network_config

from cogvid.config import instantiate
from cogvid.errors import DeviceError
from cogvid.speed.blocks import BlockStack
from cogvid.speed.cache import FirstBlockCache, TeaCache, step_cache


def _dit(variant: str = "5b", dtype: str = "fp32", **overrides):
    model = instantiate(tiny_network_config(variant, **overrides), dtype=dtype)
    state = random_dit_state(variant, 0, **overrides)
    model.load_state_dict({k: v.to(model.dtype) for k, v in state.items()}, strict=False)
    return model.eval()


def _inputs(variant: str = "5b", dtype=torch.float32, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    channels = 8 if variant in ("5b-i2v", "1.5-i2v") else 4
    frames = 2 if variant.startswith("1.5") else 3
    x = torch.randn(2, frames, channels, 8, 8, generator=generator).to(dtype)
    extra = {"ofs": torch.tensor([2.0])} if variant == "1.5-i2v" else {}
    return x, torch.randn(2, 8, 32, generator=generator).to(dtype), extra


def _forward(model, x, context, t=500, **extra):
    with torch.no_grad():
        return model(x, timesteps=torch.tensor([t, t]), context=context, **extra)


@pytest.mark.parametrize("variant", VARIANTS)
def test_block_stack_is_bit_identical_to_sats_layer_loop(variant):
    """Same parameters, same operations in the same order: equal bit for bit (one process)."""
    model = _dit(variant)
    x, context, extra = _inputs(variant)
    reference = _forward(model, x, context, **extra)
    model.speed_blocks = BlockStack(model)
    assert torch.equal(_forward(model, x, context, **extra), reference)
    assert set(model.state_dict()) == set(_dit(variant).state_dict())  # the stack adds no keys


def test_teacache_skips_while_the_estimate_stays_under_the_threshold():
    model = _dit()
    x, context, _ = _inputs()
    timesteps = [999, 979, 959, 939, 919, 899]
    uncached = [_forward(model, x, context, t) for t in timesteps]
    constant = TeaCache(0.5, total=len(timesteps), coefficients=(0.2,))  # every step's estimate is 0.2
    with step_cache(model, constant) as cache:
        outputs = [_forward(model, x, context, t) for t in timesteps]
    # run, skip (0.2), skip (0.4), run (0.6 >= 0.5, restart), skip (0.2), last forward always runs
    assert cache.stats() == {"dit_forwards": 6, "ran": 3, "skipped": 3, "blocks_run": 6, "blocks_total": 12}
    for index in (0, 3, 5):
        assert torch.equal(outputs[index], uncached[index])
    assert not torch.equal(outputs[1], uncached[1])
    assert model.speed_blocks is None  # the stack installed for the video is gone again
    assert len(cache.changes) == 5 and all(change > 0 for change in cache.changes)


def test_first_block_cache_skips_the_other_blocks_when_the_first_residual_barely_changes():
    model = _dit(num_layers=3)
    x, context, _ = _inputs()
    timesteps = [999, 979, 959, 939]
    uncached = [_forward(model, x, context, t) for t in timesteps]
    with step_cache(model, FirstBlockCache(1e-9, total=4)) as never:
        outputs = [_forward(model, x, context, t) for t in timesteps]
    assert never.skipped == 0 and all(torch.equal(a, b) for a, b in zip(outputs, uncached))
    with step_cache(model, FirstBlockCache(10.0, total=4)) as always:
        skipped = [_forward(model, x, context, t) for t in timesteps]
    assert always.stats() == {"dit_forwards": 4, "ran": 2, "skipped": 2, "blocks_run": 3 + 1 + 1 + 3, "blocks_total": 12}
    assert torch.equal(skipped[0], uncached[0]) and torch.equal(skipped[3], uncached[3])
    error = (skipped[1] - uncached[1]).abs().max() / uncached[1].abs().max()
    assert 0 < error < 0.3  # an approximation of the next step, not noise (measured 0.10)


def test_int8_weights_replace_the_dit_layers_one_by_one():
    from cogvid.speed.quantize import dit_layer_names, module_bytes, quantize_dit_, tensor_bytes

    model = _dit(dtype="bf16", hidden_size=256, num_attention_heads=4)
    x, context, _ = _inputs(dtype=torch.bfloat16)
    reference = _forward(model, x, context).float()
    before = module_bytes(model)
    largest = max(tensor_bytes(model.get_submodule(name).weight) for name in dit_layer_names(model))
    held = []
    count = quantize_dit_(model, "int8wo", observe=lambda name: held.append(module_bytes(model)))
    after = module_bytes(model)
    assert count == len(held) == 4 + 2 * 4  # text projection, 2 AdaLN modulations, the final AdaLN; 4 linears in each of 2 layers
    assert max(held) <= before + largest  # never two copies: each layer's weight is replaced in place
    assert after <= 0.56 * before  # int8 + per-row scales (measured 0.530 here)
    output = _forward(model, x, context).float()
    error = float((output - reference).abs().max() / reference.abs().max())
    assert 0 < error < 0.03  # measured 0.006: int8 per-row weights on a bf16 model


def test_int8_weights_run_in_the_block_stack_too():
    from cogvid.speed.quantize import quantize_dit_

    model = _dit(dtype="bf16")
    quantize_dit_(model, "int8dq")
    x, context, _ = _inputs(dtype=torch.bfloat16)
    sat = _forward(model, x, context)
    model.speed_blocks = BlockStack(model)
    assert torch.equal(_forward(model, x, context), sat)


def test_attention_kernels_on_the_cpu():
    from cogvid.speed.attention import resolve_kernel

    cpu = torch.device("cpu")
    assert resolve_kernel("auto", cpu, torch.float32) == "sdpa" and resolve_kernel("sdpa", cpu, torch.bfloat16) == "sdpa"
    for name in ("flash", "sage"):
        with pytest.raises(DeviceError, match="CUDA GPUs only"):
            resolve_kernel(name, cpu, torch.bfloat16)


def test_device_checks_refuse_fp8_and_a_missing_compiler():
    from torch._inductor import config as inductor

    from cogvid.request import ModelChoice
    from cogvid.speed.setup import check_device

    cpu = torch.device("cpu")
    with pytest.raises(DeviceError, match="runs on CUDA GPUs only"):
        check_device(ModelChoice(quantize="fp8dq"), cpu, torch.bfloat16)
    with inductor.patch({"cpp.cxx": (None, "no-such-compiler-g++")}), pytest.raises(DeviceError, match="needs a C\\+\\+ compiler") as caught:
        check_device(ModelChoice(compile=True), cpu, torch.float32)
    assert "leave out --compile" in caught.value.hint
    assert check_device(ModelChoice(), cpu, torch.float32) == "sdpa"


@pytest.mark.slow
def test_compiled_blocks_compile_once_for_all_layers_and_models():
    """Regional compilation: one graph serves every block, and a second model (a batch's next LoRA
    group, a REPL /model) reuses it; the result matches eager within float32 rounding."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _dit(num_layers=3)
    x, context, _ = _inputs()
    eager = _forward(model, x, context)
    model.speed_blocks = BlockStack(model, compiled=True)
    compiled = _forward(model, x, context)
    assert (compiled - eager).abs().max() <= 1e-5 * eager.abs().max()  # measured 2e-7 relative
    assert counters["stats"]["unique_graphs"] == 1
    other = _dit(num_layers=3)
    other.speed_blocks = BlockStack(other, compiled=True)
    _forward(other, x, context)
    assert counters["stats"]["unique_graphs"] == 1
