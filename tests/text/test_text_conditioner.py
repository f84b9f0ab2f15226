"""The T5 conditioner: tokenization, encoding, unconditional/negative embeddings, loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from omegaconf import OmegaConf

from cogvid.config import instantiate
from cogvid.errors import CheckpointError, ConfigError, MissingFileError
from cogvid.text import FrozenT5Embedder, GeneralConditioner, PromptTruncatedWarning, UnknownWordsWarning
from fixtures.tiny_t5 import build_tiny_t5

MAX_LENGTH = 24
PROMPTS = ["A red ball is bouncing on a wooden floor.", "a  cat   dancing at night ", "Zebra 42 ünïcödé!"]
# The third prompt has words the tiny tokenizer reads as <unk> (its warning is tested on its own below).
pytestmark = pytest.mark.filterwarnings("ignore::cogvid.text.UnknownWordsWarning")


@pytest.fixture(scope="module")
def weights_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    build_tiny_t5(root / "t5-v1_1-xxl")
    return root


@pytest.fixture(scope="module")
def t5_dir(weights_root) -> Path:
    return weights_root / "t5-v1_1-xxl"


def conditioner_node(model_dir: str, max_length: int = MAX_LENGTH):
    return OmegaConf.create(
        {
            "target": "sgm.modules.GeneralConditioner",
            "params": {
                "emb_models": [
                    {
                        "is_trainable": False,
                        "input_key": "txt",
                        "ucg_rate": 0.1,
                        "target": "sgm.modules.encoders.modules.FrozenT5Embedder",
                        "params": {"model_dir": model_dir, "max_length": max_length},
                    }
                ]
            },
        }
    )


@pytest.fixture()
def conditioner(t5_dir) -> GeneralConditioner:
    return instantiate(conditioner_node(str(t5_dir)))


def reference_tokens(t5_dir: Path, prompts: list[str], max_length: int) -> torch.Tensor:
    """The original FrozenT5Embedder's tokenizer call."""
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(str(t5_dir))
    return tokenizer(
        prompts,
        truncation=True,
        max_length=max_length,
        return_length=True,
        return_overflowing_tokens=False,
        padding="max_length",
        return_tensors="pt",
    )["input_ids"]


def test_tokenization_matches_the_original_call_and_sentencepiece(t5_dir):
    embedder = FrozenT5Embedder(str(t5_dir), max_length=MAX_LENGTH)
    tokens = embedder.tokenize(PROMPTS)
    assert torch.equal(tokens, reference_tokens(t5_dir, PROMPTS, MAX_LENGTH))
    # Independently: SentencePiece ids, then </s> (1), then pad (0) up to max_length.
    sp = spm.SentencePieceProcessor(model_file=str(t5_dir / "spiece.model"))
    for row, prompt in zip(tokens.tolist(), PROMPTS):
        ids = sp.encode(prompt) + [1]
        assert row == ids + [0] * (MAX_LENGTH - len(ids))


def test_encoding_is_t5_without_attention_mask(t5_dir, conditioner):
    from transformers import T5EncoderModel

    cond = conditioner(({"txt": PROMPTS}))["crossattn"]
    assert cond.shape == (len(PROMPTS), MAX_LENGTH, 32)
    reference_model = T5EncoderModel.from_pretrained(str(t5_dir)).eval()
    tokens = reference_tokens(t5_dir, PROMPTS, MAX_LENGTH)
    with torch.no_grad():
        unmasked = reference_model(input_ids=tokens).last_hidden_state
        masked = reference_model(input_ids=tokens, attention_mask=(tokens != 0).long()).last_hidden_state
    assert torch.equal(cond, unmasked)
    assert (cond - masked).abs().max() > 1e-3  # pad tokens are attended, as in the original


def test_unconditional_is_zeros_like_the_original(conditioner):
    c, uc = conditioner.get_unconditional_conditioning({"txt": PROMPTS[:1]}, {"txt": [""]}, ["txt"])
    assert uc["crossattn"].shape == c["crossattn"].shape
    assert torch.count_nonzero(uc["crossattn"]) == 0
    assert torch.count_nonzero(c["crossattn"]) > 0
    # Without forcing zeros the unconditional embedding is T5("") (not zero).
    _, uc_text = conditioner.get_unconditional_conditioning({"txt": PROMPTS[:1]}, {"txt": [""]}, [])
    assert torch.count_nonzero(uc_text["crossattn"]) > 0

    cond, uncond = conditioner.encode(PROMPTS)
    torch.testing.assert_close(cond["crossattn"][:1], c["crossattn"], rtol=0, atol=1e-6)
    assert torch.count_nonzero(uncond["crossattn"]) == 0


def test_negative_prompt_is_encoded_and_blank_ones_stay_zero(conditioner):
    cond, uncond = conditioner.encode(PROMPTS[:2], ["blurry, dark", "   "])
    negative = conditioner({"txt": ["blurry, dark"]})["crossattn"]
    assert torch.equal(uncond["crossattn"][0], negative[0])
    assert torch.count_nonzero(uncond["crossattn"][1]) == 0
    assert torch.equal(cond["crossattn"], conditioner({"txt": PROMPTS[:2]})["crossattn"])
    with pytest.raises(ConfigError, match="negative"):
        conditioner.encode(PROMPTS[:2], ["only one"])


def test_truncation_warns_with_the_number_of_lost_tokens(t5_dir):
    sp = spm.SentencePieceProcessor(model_file=str(t5_dir / "spiece.model"))
    long_prompt = " ".join(["a red ball is bouncing"] * 6)
    full = len(sp.encode(long_prompt)) + 1  # with </s>
    embedder = FrozenT5Embedder(str(t5_dir), max_length=10)
    with pytest.warns(PromptTruncatedWarning) as record:
        tokens = embedder.tokenize(["short", long_prompt])
    assert len(record) == 1
    warning = record[0].message
    assert warning.prompt_index == 1 and warning.lost_tokens == full - 10 and warning.max_length == 10
    assert f"{full - 10} tokens dropped" in str(warning)
    assert tokens[1, -1].item() == 1  # truncated, </s> still last
    assert tokens[1, :-1].tolist() == sp.encode(long_prompt)[:9]

    exact = FrozenT5Embedder(str(t5_dir), max_length=full)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        exact.tokenize([long_prompt])
    assert exact.count_tokens([long_prompt, "short"])[0] == full


DEMO_T5 = Path(__file__).resolve().parents[2] / "cogvid" / "demo" / "cogvideox-tiny-trained" / "t5-v1_1-xxl"


def test_words_the_tokenizer_reads_as_unk_are_named_in_a_warning():
    embedder = FrozenT5Embedder(str(DEMO_T5), max_length=16)  # word-level: one piece per grammar word
    assert embedder.unknown_words(["a purple hexagon moving left", "A Red circle moving left", "a red ball, a red ball"]) == [
        ["purple", "hexagon"], [], ["ball,", "ball"]
    ]
    with pytest.warns(UnknownWordsWarning) as record:
        embedder.tokenize(["a red circle moving left", "a purple circle moving left"])
    assert len(record) == 1
    assert record[0].message.prompt_index == 1 and record[0].message.words == ["purple"]
    assert "does not know 'purple'" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownWordsWarning)
        embedder.tokenize(["a green triangle sliding up over a black background"])


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing_folder", "folder not found"),
        ("no_config", "config.json"),
        ("no_tokenizer", "spiece.model"),
        ("no_shard", "model-00002-of-00004.safetensors"),
    ],
)
def test_missing_files_give_a_clear_error(t5_dir, tmp_path, breakage, message):
    import shutil

    folder = tmp_path / "t5"
    if breakage != "missing_folder":
        shutil.copytree(t5_dir, folder)
        victim = {
            "no_config": "config.json",
            "no_tokenizer": "spiece.model",
            "no_shard": "model-00002-of-00004.safetensors",
        }
        (folder / victim[breakage]).unlink()
    with pytest.raises(MissingFileError) as info:
        FrozenT5Embedder(str(folder), max_length=MAX_LENGTH)
    assert info.value.exit_code == 3
    assert message in str(info.value) and str(folder) in str(info.value)
    assert "model.safetensors" in str(info.value)  # the expected layout is spelled out
    assert info.value.hint


def test_relative_model_dir_resolves_under_weights_dir(weights_root):
    built = instantiate(conditioner_node("t5-v1_1-xxl"), weights_dir=str(weights_root))
    assert built.embedders[0].model_dir == weights_root / "t5-v1_1-xxl"
    # The 1.5 YAMLs name the hub id google/t5-v1_1-xxl: its last component is found too.
    hub = instantiate(conditioner_node("google/t5-v1_1-xxl"), weights_dir=str(weights_root))
    assert hub.embedders[0].model_dir == weights_root / "t5-v1_1-xxl"
    with pytest.raises(ConfigError, match="max_length"):
        instantiate(conditioner_node("t5-v1_1-xxl", max_length="long"), weights_dir=str(weights_root))


def test_lazy_loading_dtype_offload_and_no_rng(conditioner):
    embedder = conditioner.embedders[0]
    assert not embedder.loaded and list(conditioner.state_dict()) == []
    rng = torch.get_rng_state()
    reference, _ = conditioner.encode(PROMPTS)
    assert torch.equal(torch.get_rng_state(), rng)  # ucg_rate 0.1 is never applied
    assert embedder.loaded

    conditioner.offload()
    assert next(embedder.transformer.parameters()).device.type == "cpu"
    again, _ = conditioner.encode(PROMPTS)
    assert torch.equal(again["crossattn"], reference["crossattn"])
    conditioner.offload(free=True)
    assert not embedder.loaded

    conditioner.to(torch.bfloat16)
    low, uncond = conditioner.encode(PROMPTS)
    assert low["crossattn"].dtype == uncond["crossattn"].dtype == torch.bfloat16
    # transformers would keep T5's `wo` in float32; the original casts the whole engine.
    assert {p.dtype for p in embedder.transformer.parameters()} == {torch.bfloat16}
    assert (low["crossattn"].float() - reference["crossattn"]).abs().max() < 0.2


def test_full_engine_checkpoint_t5_keys_are_accepted_before_loading(t5_dir):
    from transformers import T5EncoderModel

    conditioner = instantiate(conditioner_node(str(t5_dir)))
    t5_state = T5EncoderModel.from_pretrained(str(t5_dir)).state_dict()
    state = {f"embedders.0.transformer.{key}": value for key, value in t5_state.items()}
    result = conditioner.load_state_dict(state, strict=True)
    assert result.unexpected_keys == [] and result.missing_keys == []
    with pytest.raises(RuntimeError, match="Unexpected key"):
        conditioner.load_state_dict({"embedders.0.bogus": torch.zeros(1)}, strict=True)


def test_corrupt_weights_are_a_checkpoint_error(t5_dir, tmp_path):
    import shutil

    folder = tmp_path / "t5"
    shutil.copytree(t5_dir, folder)
    (folder / "model-00001-of-00004.safetensors").write_bytes(b"not a safetensors file")
    embedder = FrozenT5Embedder(str(folder), max_length=MAX_LENGTH)
    with pytest.raises(CheckpointError) as info:
        embedder(["a red ball"])
    assert info.value.exit_code == 3 and str(folder) in str(info.value)
