"""`--lora` with PEFT/diffusers LoRA safetensors (issue 15): merged as diffusers' own fuse_lora merges them.

The LoRA is made by PEFT on diffusers' transformer (attention, feed-forward and AdaLN modules, lora_alpha
!= r, saved by diffusers' ``save_lora_weights`` with its adapter metadata); diffusers fuses it into its
copy of the weights and cogvid merges it into its SAT DiT: the weights agree.
"""

from __future__ import annotations

import pytest
import torch

import cogvid
from cogvid.diffusers_weights import dit_to_diffusers
from cogvid.errors import CheckpointError
from cogvid.export import export

pytestmark = [pytest.mark.parity, pytest.mark.slow]
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "norm1.linear"]


@pytest.fixture(scope="module")
def base_and_lora(tmp_path_factory):
    from diffusers import CogVideoXPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("peft")
    base = export("test-tiny", root / "base").folder
    pipeline = CogVideoXPipeline.from_pretrained(str(base))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)  # random A and B
    pipeline.transformer.add_adapter(config)
    CogVideoXPipeline.save_lora_weights(root / "lora", transformer_lora_layers=get_peft_model_state_dict(pipeline.transformer),
                                        transformer_lora_adapter_metadata=config.to_dict())
    return base, root / "lora"


def _fused(base, lora, scale):
    from diffusers import CogVideoXPipeline

    pipeline = CogVideoXPipeline.from_pretrained(str(base))
    pipeline.load_lora_weights(str(lora))
    pipeline.fuse_lora(lora_scale=scale)
    pipeline.unload_lora_weights()
    return pipeline.transformer.state_dict()


def test_peft_lora_merge_equals_diffusers_fuse(base_and_lora):
    base, lora = base_and_lora
    fused = _fused(base, lora, 0.6)
    network = cogvid.load("test-tiny", lora=[f"{lora}:0.6"]).engine.network
    optional = network.optional_state_keys()
    ours = dit_to_diffusers({k: v for k, v in network.state_dict().items() if k not in optional})
    plain = dit_to_diffusers({k: v for k, v in cogvid.load("test-tiny").engine.network.state_dict().items() if k not in optional})
    changed = {k for k in ours if not torch.equal(ours[k], plain[k])}
    assert changed == {k for k in fused if not torch.equal(fused[k], plain[k])}
    assert len(changed) == 2 * len(TARGETS)  # each target in both blocks
    worst = max((ours[k] - fused[k]).abs().max().item() for k in ours)
    assert worst <= 1e-6  # float32: cogvid adds scale * alpha/r * B A once, PEFT scales then adds; measured 0 (bit-equal) on this CPU


def test_peft_lora_file_path_and_refusals(base_and_lora, tmp_path):
    from safetensors.torch import load_file, save_file

    base, lora = base_and_lora
    file = lora / "pytorch_lora_weights.safetensors"
    by_folder = cogvid.load("test-tiny", lora=[str(lora)]).engine.network.state_dict()
    by_file = cogvid.load("test-tiny", lora=[str(file)]).engine.network.state_dict()
    assert all(torch.equal(by_folder[k], by_file[k]) for k in by_folder)
    tensors = load_file(str(file))
    tensors["transformer.transformer_blocks.0.attn1.to_q.lora_magnitude_vector"] = torch.ones(128)
    save_file(tensors, str(tmp_path / "dora.safetensors"))
    with pytest.raises(CheckpointError, match="DoRA"):
        cogvid.load("test-tiny", lora=[str(tmp_path / "dora.safetensors")])
