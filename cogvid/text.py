"""T5 text conditioning, as the original ``sgm`` conditioner does it.

``FrozenT5Embedder`` tokenizes exactly like the original (pad to ``max_length``, truncate, ``</s>``
appended, no attention mask: pad tokens are attended) and returns T5's ``last_hidden_state``
(B, N_txt, d_model). ``GeneralConditioner`` routes embedder outputs by rank (2 -> ``vector``,
3 -> ``crossattn``, 4/5 -> ``concat``). The unconditional embedding is all zeros, as in
``sample_video.py`` (``force_uc_zero_embeddings=["txt"]``), unless a negative prompt is given.

The T5 weights are read from disk on first use (or by :meth:`FrozenT5Embedder.load`), in the dtype
and on the device the module was moved to, so building an engine costs nothing for the text encoder.
The training-only ``ucg_rate`` dropout is stored but never applied: encoding draws no random numbers.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cogvid.errors import CheckpointError, CogvidWarning, ConfigError, MissingFileError

# Output routing of the original GeneralConditioner: tensor rank -> conditioning key, key -> cat dim.
OUTPUT_DIM_TO_KEY = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
KEY_TO_CAT_DIM = {"vector": 1, "crossattn": 2, "concat": 1}

T5_FOLDER_LAYOUT = """\
expected a Hugging Face T5 encoder folder such as t5-v1_1-xxl/ holding:
  config.json
  spiece.model            (tokenizer; with tokenizer_config.json, special_tokens_map.json)
  model.safetensors       or model-0000k-of-0000n.safetensors + model.safetensors.index.json"""

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class PromptTruncatedWarning(CogvidWarning):
    """A prompt was longer than the text encoder's ``max_length`` and lost its tail.

    ``prompt_index`` is its position in the batch, ``lost_tokens`` how many tokens were dropped,
    ``max_length`` the token budget (including ``</s>``).
    """

    def __init__(self, message: str, prompt_index: int, lost_tokens: int, max_length: int) -> None:
        super().__init__(message)
        self.prompt_index = prompt_index
        self.lost_tokens = lost_tokens
        self.max_length = max_length


class UnknownWordsWarning(CogvidWarning):
    """Words of a prompt that the tokenizer can only read as ``<unk>``: the model sees none of them.

    ``prompt_index`` is the prompt's position in the batch, ``words`` the unknown words in order.
    """

    def __init__(self, message: str, prompt_index: int, words: list[str]) -> None:
        super().__init__(message)
        self.prompt_index = prompt_index
        self.words = words


def _missing_t5(folder: Path, what: str) -> MissingFileError:
    return MissingFileError(
        f"T5 text encoder {what}: {folder}\n{T5_FOLDER_LAYOUT}",
        hint="download the model's t5-v1_1-xxl/ folder (see `cogvid models show NAME`) "
        "or point the config's model_dir at it",
    )


def check_t5_folder(folder: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Path:
    """Return ``folder`` as a Path if it holds a loadable T5 encoder; MissingFileError otherwise.

    ``tokenizer``: the tokenizer's own folder (diffusers layout: text_encoder/ and tokenizer/ apart);
    by default the tokenizer files lie in ``folder`` (t5-v1_1-xxl/).
    """
    path = Path(folder).expanduser()
    if not path.exists():
        raise _missing_t5(path, "folder not found")
    if not path.is_dir():
        raise _missing_t5(path, "path is not a folder")
    if not (path / "config.json").is_file():
        raise _missing_t5(path, "folder has no config.json")
    vocab = Path(tokenizer).expanduser() if tokenizer is not None else path
    if not (vocab / "spiece.model").is_file() and not (vocab / "tokenizer.json").is_file():
        raise _missing_t5(vocab, "folder has no tokenizer (spiece.model)")
    for index_name in _WEIGHT_INDEXES:
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(
                    f"T5 weight index is unreadable: {index} ({e})",
                    hint="re-download the t5-v1_1-xxl/ folder",
                ) from e
            missing = [name for name in shards if not (path / name).is_file()]
            if missing:
                raise _missing_t5(path, f"folder lacks weight shard(s) {', '.join(missing)} listed in {index_name}")
            return path
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise _missing_t5(path, "folder has no weights (model.safetensors)")
    return path


def _resolve_model_dir(model_dir: str | os.PathLike, weights_dir: str | os.PathLike | None) -> Path:
    """A relative ``model_dir`` is looked up under ``weights_dir`` (also by its last component,
    so the 1.5 YAMLs' hub id ``google/t5-v1_1-xxl`` finds ``<weights_dir>/t5-v1_1-xxl``)."""
    path = Path(model_dir).expanduser()
    if path.is_absolute() or weights_dir is None:
        return path
    root = Path(weights_dir).expanduser()
    candidates = [root / path, root / path.name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


class FrozenT5Embedder(nn.Module):
    """T5 encoder for prompts: ``forward(list[str]) -> (B, max_length, d_model)``.

    Parameters are the original's. ``device`` and ``cache_dir`` are accepted for compatibility
    with the original YAMLs and not used: placement follows ``.to()`` like any module, and the
    folder is always local. ``weights_dir`` resolves a relative ``model_dir``. The folder layout
    is checked here; the weights load on first use (or :meth:`load`).
    """

    def __init__(
        self,
        model_dir: str = "google/t5-v1_1-xxl",
        device: str | None = None,
        max_length: int = 77,
        freeze: bool = True,
        cache_dir: str | None = None,
        weights_dir: str | None = None,
        tokenizer_dir: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(max_length, bool) or max_length < 2:
            raise ConfigError(f"FrozenT5Embedder.max_length must be an integer >= 2, found {max_length!r}")
        self.model_dir = check_t5_folder(_resolve_model_dir(model_dir, weights_dir), tokenizer_dir)
        self.tokenizer_dir = Path(tokenizer_dir).expanduser() if tokenizer_dir is not None else self.model_dir
        self.max_length = int(max_length)
        self.freeze_weights = bool(freeze)
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.input_key = "txt"
        self.tokenizer: Any = None
        self.transformer: nn.Module | None = None
        self.after_load: Any = None  # called with the encoder after each load (cogvid.speed: --quantize-text)
        # An empty tensor that follows .to() and dtype casts: where and in which dtype to load T5.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    # -- loading ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device prompts are encoded on."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the encoder (float32 until the module is cast)."""
        return self._anchor.dtype

    @property
    def loaded(self) -> bool:
        """Whether the T5 weights are in memory."""
        return self.transformer is not None

    def load_tokenizer(self) -> Any:
        """The ``T5Tokenizer`` of the folder (loaded once)."""
        if self.tokenizer is None:
            from transformers import T5Tokenizer

            try:
                self.tokenizer = T5Tokenizer.from_pretrained(str(self.tokenizer_dir), local_files_only=True)
            except (OSError, ValueError, RuntimeError) as e:
                raise CheckpointError(
                    f"cannot load the T5 tokenizer from {self.tokenizer_dir}: {e}",
                    hint="re-download the t5-v1_1-xxl/ folder (spiece.model, tokenizer_config.json)",
                ) from e
        return self.tokenizer

    def load(self) -> FrozenT5Embedder:
        """Read the T5 weights (once) straight into this module's dtype and device."""
        if self.transformer is None:
            from cogvid.speed.quantize import import_torchao_quietly

            import_torchao_quietly()  # transformers imports torchao when it is installed
            import transformers
            from transformers import T5EncoderModel

            dtype = self.dtype
            major = int(transformers.__version__.split(".")[0])
            # transformers 5 loads straight into `dtype` without a random init; 4.x needs the flags.
            dtype_kwargs: dict[str, Any] = (
                {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype, "low_cpu_mem_usage": True}
            )
            from transformers.utils import logging as hf_logging

            bars_were_enabled = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # cogvid renders its own progress
            try:
                model = T5EncoderModel.from_pretrained(str(self.model_dir), local_files_only=True, **dtype_kwargs)
            except Exception as e:  # OSError, safetensors' SafetensorError, shape mismatches, ...
                raise CheckpointError(
                    f"cannot load the T5 encoder from {self.model_dir}: {type(e).__name__}: {e}",
                    hint="re-download the t5-v1_1-xxl/ folder; its weight files may be incomplete",
                ) from e
            finally:
                if bars_were_enabled:
                    hf_logging.enable_progress_bar()
            # transformers keeps T5's `wo` layers in float32 when loading in half precision;
            # the original casts the whole engine, so cast everything to one dtype.
            model = model.to(device=self.device, dtype=dtype)
            model.eval()
            if self.freeze_weights:
                model.requires_grad_(False)
            if self.after_load is not None:
                self.after_load(model)
            self.transformer = model
        self.load_tokenizer()
        return self

    def offload(self, free: bool = False) -> None:
        """Move the encoder to CPU (``free=True``: drop it; the next encode reads it again)."""
        if self.transformer is None:
            return
        if free:
            self.transformer = None
        else:
            self.transformer.to("cpu")

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Full-engine checkpoints (SAT fine-tunes) carry the frozen T5 weights; they equal the
        # folder's, so they are accepted and ignored while the encoder is not loaded yet.
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self.transformer is None:
            own = prefix + "transformer."
            unexpected_keys[:] = [key for key in unexpected_keys if not key.startswith(own)]

    # -- encoding -----------------------------------------------------------------------------

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids (B, max_length) exactly as the original.

        Warns with UnknownWordsWarning (words the tokenizer reads as ``<unk>``) and
        PromptTruncatedWarning (a prompt too long).
        """
        tokenizer = self.load_tokenizer()
        prompts = list(prompts)
        for index, (prompt, ids) in enumerate(zip(prompts, self._untruncated_ids(prompts))):
            words = self._unknown_words_of(prompt, ids)
            if words:
                warnings.warn(
                    UnknownWordsWarning(
                        f"prompt {index + 1}: this model's tokenizer does not know "
                        f"{', '.join(repr(w) for w in words)}; the model cannot read "
                        f"{'them' if len(words) > 1 else 'it'}",
                        prompt_index=index,
                        words=words,
                    ),
                    stacklevel=2,
                )
            if len(ids) > self.max_length:
                lost = len(ids) - self.max_length
                warnings.warn(
                    PromptTruncatedWarning(
                        f"prompt {index + 1} is {len(ids)} tokens long; only the first {self.max_length} "
                        f"(including </s>) are used, {lost} token{'s' if lost != 1 else ''} dropped",
                        prompt_index=index,
                        lost_tokens=lost,
                        max_length=self.max_length,
                    ),
                    stacklevel=2,
                )
        batch_encoding = tokenizer(
            prompts,
            truncation=True,
            max_length=self.max_length,
            return_length=True,
            return_overflowing_tokens=False,
            padding="max_length",
            return_tensors="pt",
        )
        return batch_encoding["input_ids"]

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Untruncated token counts (with ``</s>``), to warn a user before generating."""
        return [len(ids) for ids in self._untruncated_ids(prompts)]

    def unknown_words(self, prompts: Sequence[str]) -> list[list[str]]:
        """For each prompt, its whitespace-separated words that contain a ``<unk>`` token."""
        return [self._unknown_words_of(p, ids) for p, ids in zip(prompts, self._untruncated_ids(prompts))]

    def _untruncated_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        return self.load_tokenizer()(list(prompts), truncation=False, verbose=False)["input_ids"]

    def _unknown_words_of(self, prompt: str, ids: list[int]) -> list[str]:
        """The words of ``prompt`` (tokenized whole as ``ids``) that contain a ``<unk>`` token."""
        tokenizer = self.load_tokenizer()
        unk = tokenizer.unk_token_id
        words: list[str] = []
        if unk is None or unk not in ids:
            return words
        for word in prompt.split():
            if word not in words and unk in tokenizer(word, add_special_tokens=False, verbose=False)["input_ids"]:
                words.append(word)
        return words

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """Encode prompts: (B,) strings -> (B, max_length, d_model), no attention mask."""
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = self.tokenize(prompts)
        transformer = self.load().transformer
        if next(transformer.parameters()).device != self.device:  # back from offload()
            transformer.to(self.device)
        tokens = tokens.to(self.device)
        with torch.autocast(device_type=self.device.type, enabled=False):
            outputs = transformer(input_ids=tokens)
        return outputs.last_hidden_state


class GeneralConditioner(nn.Module):
    """The original conditioner: builds each embedder and routes its output by tensor rank.

    ``emb_models`` items are ``{target, params, input_key, is_trainable, ucg_rate}`` nodes.
    ``weights_dir`` is handed to every embedder to resolve a relative ``model_dir``.
    """

    def __init__(self, emb_models: list, weights_dir: str | None = None) -> None:
        super().__init__()
        from cogvid.config import instantiate

        if len(emb_models) == 0:
            raise ConfigError("conditioner_config.params.emb_models: expected at least one embedder, found none")
        embedders = []
        for index, node in enumerate(emb_models):
            if not isinstance(node, Mapping) or "target" not in node:
                raise ConfigError(
                    f"conditioner_config.params.emb_models.{index}: expected a node with target/params"
                )
            if "input_key" not in node:
                raise ConfigError(
                    f"conditioner_config.params.emb_models.{index}: missing input_key (the original uses 'txt')"
                )
            extra = {"weights_dir": weights_dir} if weights_dir is not None else {}
            embedder = instantiate(node, **extra)
            embedder.input_key = str(node["input_key"])
            embedder.is_trainable = bool(node.get("is_trainable", False))
            embedder.ucg_rate = float(node.get("ucg_rate", 0.0))  # training-only; never applied here
            embedders.append(embedder)
        self.embedders = nn.ModuleList(embedders)

    def forward(
        self, batch: Mapping[str, Any], force_zero_embeddings: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Embed ``batch[embedder.input_key]`` for every embedder; zeros for keys in
        ``force_zero_embeddings``. Returns ``{"crossattn": (B, N, D), ...}``."""
        force_zero = set(force_zero_embeddings or ())
        output: dict[str, torch.Tensor] = {}
        for embedder in self.embedders:
            with torch.no_grad():
                embeddings = embedder(batch[embedder.input_key])
            if not isinstance(embeddings, (list, tuple)):
                embeddings = [embeddings]
            for embedding in embeddings:
                key = OUTPUT_DIM_TO_KEY[embedding.dim()]
                if embedder.input_key in force_zero:
                    embedding = torch.zeros_like(embedding)
                if key in output:
                    output[key] = torch.cat((output[key], embedding), KEY_TO_CAT_DIM[key])
                else:
                    output[key] = embedding
        return output

    def get_unconditional_conditioning(
        self,
        batch_c: Mapping[str, Any],
        batch_uc: Mapping[str, Any] | None = None,
        force_uc_zero_embeddings: Sequence[str] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(c, uc)`` as the original: ``uc`` embeds ``batch_uc`` (or ``batch_c``), with zeros
        for keys in ``force_uc_zero_embeddings`` (``["txt"]`` in sample_video)."""
        force_zero = list(force_uc_zero_embeddings or ())
        cond = self(batch_c)
        uc_batch = batch_c if batch_uc is None else batch_uc
        input_keys = {embedder.input_key for embedder in self.embedders}
        if input_keys <= set(force_zero):
            # Every embedding is zeroed: skip running T5 on text that is thrown away.
            uc_size = len(uc_batch[self.embedders[0].input_key])
            uncond = {key: value.new_zeros((uc_size, *value.shape[1:])) for key, value in cond.items()}
        else:
            uncond = self(uc_batch, force_zero)
        return cond, uncond

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(cond, uncond)`` for a batch of prompts.

        ``uncond`` is all zeros (the original) for every prompt whose negative prompt is missing
        or blank, and the encoder's embedding of the negative prompt otherwise.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if negative_prompts is None:
            negatives = [""] * len(prompts)
        else:
            negatives = [negative_prompts] if isinstance(negative_prompts, str) else list(negative_prompts)
        if len(negatives) != len(prompts):
            raise ConfigError(
                f"got {len(prompts)} prompt(s) but {len(negatives)} negative prompt(s)",
                hint="give one negative prompt per prompt, or none",
            )
        keys = {embedder.input_key for embedder in self.embedders}
        cond = self({key: prompts for key in keys})
        uncond = {key: torch.zeros_like(value) for key, value in cond.items()}
        rows = [i for i, text in enumerate(negatives) if text.strip()]
        if rows:
            negative = self({key: [negatives[i] for i in rows] for key in keys})
            for key, value in negative.items():
                uncond[key][rows] = value
        return cond, uncond

    def load(self) -> GeneralConditioner:
        """Load every embedder's weights now (they load on first use otherwise)."""
        for embedder in self.embedders:
            if hasattr(embedder, "load"):
                embedder.load()
        return self

    def offload(self, free: bool = False) -> None:
        """Move the text encoders to CPU (or drop them with ``free=True``) after encoding."""
        for embedder in self.embedders:
            if hasattr(embedder, "offload"):
                embedder.offload(free=free)
