"""The CogVideoX DiT: a SAT ``BaseModel`` with the mixins of :mod:`cogvid.dit.mixins`.

Same parameters, state-dict keys and forward contract as the original
``dit_video_concat.DiffusionTransformer`` (v1.0 for an int ``patch_size``, HEAD/1.5 for a
``[t, h, w]`` list). ``forward(x, timesteps, context, y=None, **kw)`` takes x (B, T, C_in, h, w)
and returns (B, T, C_out, h, w); ``kw`` may hold ``ofs`` (1.5-I2V). Position tables and
unpatchify follow the actual input grid (see the mixins), so results equal the original at its
training grid and stay correct at other sizes.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from math import prod
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from cogvid.config import instantiate
from cogvid.devices import DTYPE_ALIASES, dtype_name, torch_dtype
from cogvid.dit import positions
from cogvid.dit._sat import BaseModel, LayerNorm, sat_runtime
from cogvid.dit.mixins import Basic3DPositionEmbeddingMixin, Rotary3DPositionEmbeddingMixin, _patch_dims
from cogvid.checkpoint import check_keys, describe_dit_state, read_state_dict, resolve_checkpoint_file, split_engine_state
from cogvid.errors import ConfigError
from cogvid.layout import is_diffusers_part


# Keys a checkpoint may or may not hold (REFERENCE §1.1): unused or recomputable.
_UNUSED_POSITION_TABLE = "transformer.position_embeddings.weight"
_ROPE_BUFFERS = ("mixins.pos_embed.freqs_sin", "mixins.pos_embed.freqs_cos")
_SINCOS_TABLE = "mixins.pos_embed.pos_embedding"


class _ForceDevice(TorchFunctionMode):
    """Create every tensor on one device, even where code passes ``device=`` explicitly (SAT does)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.constructors = _device_constructors()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in self.constructors:
            kwargs["device"] = self.device
        return func(*args, **kwargs)


@contextmanager
def _building_on(device: torch.device | None) -> Iterator[None]:
    if device is None:
        yield
        return
    with _ForceDevice(device):
        yield


class DiffusionTransformer(BaseModel):
    """CogVideoX DiT (see the module docstring). ``dtype`` is "fp32", "fp16" or "bf16" (the engine injects it).

    ``device`` (not in the original) builds the parameters directly on that device; "meta"
    builds without allocating or initialising anything (used by the checkpoint loader).
    ``speed_blocks`` (a :class:`cogvid.speed.blocks.BlockStack`, set by :mod:`cogvid.speed.setup`)
    replaces SAT's layer loop when a speed option is on; None runs SAT's own.
    """

    speed_blocks: Any = None

    def __init__(
        self,
        transformer_args: dict,
        num_frames: int,
        time_compressed_rate: int,
        latent_width: int,
        latent_height: int,
        patch_size: int | list[int],
        in_channels: int,
        out_channels: int,
        hidden_size: int,
        num_layers: int,
        num_attention_heads: int,
        elementwise_affine: bool,
        time_embed_dim: int | None = None,
        num_classes: Any = None,
        modules: dict | None = None,
        input_time: str = "adaln",
        adm_in_channels: int | None = None,
        parallel_output: bool = True,
        height_interpolation: float = 1.0,
        width_interpolation: float = 1.0,
        time_interpolation: float = 1.0,
        use_SwiGLU: bool = False,
        use_RMSNorm: bool = False,
        zero_init_y_embed: bool = False,
        ofs_embed_dim: int | None = None,
        dtype: str = "fp32",
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        _validate(num_classes, input_time, use_SwiGLU, use_RMSNorm, dtype, patch_size, modules, hidden_size, num_attention_heads)
        self.latent_width, self.latent_height = latent_width, latent_height
        self.patch_size = patch_size if isinstance(patch_size, int) else [int(p) for p in patch_size]
        self.patch_dims = _patch_dims(self.patch_size)
        self.num_frames, self.time_compressed_rate = num_frames, time_compressed_rate
        self.compressed_num_frames = (num_frames - 1) // time_compressed_rate + 1
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_size = self.model_channels = hidden_size
        self.time_embed_dim = time_embed_dim if time_embed_dim is not None else hidden_size
        self.ofs_embed_dim = ofs_embed_dim
        self.num_classes = None
        self.num_layers, self.num_attention_heads = num_layers, num_attention_heads
        self.elementwise_affine = elementwise_affine
        self.interpolation = (height_interpolation, width_interpolation, time_interpolation)
        self.dtype = torch_dtype(dtype)
        self.is_v10 = isinstance(self.patch_size, int)

        args = argparse.Namespace(**{"hidden_dropout": 0.0, "attention_dropout": 0.0, **dict(transformer_args)})
        args.num_layers, args.hidden_size, args.num_attention_heads = num_layers, hidden_size, num_attention_heads
        args.parallel_output = parallel_output
        args.checkpoint_activations = False  # inference (the original's sample_video forces this too)
        args.model_parallel_size = 1
        target = torch.device(device) if device is not None else None
        if target is not None and target.type == "meta":
            args.skip_init = True
        kwargs["activation_func"] = nn.GELU(approximate="tanh")
        kwargs["layernorm"] = _layernorm(elementwise_affine)
        with sat_runtime(building=True), _building_on(target):
            super().__init__(args=args, transformer=None, **kwargs)
            self._build_modules(dict(modules or {}))
            self.to(self.dtype)

    def _build_modules(self, configs: dict) -> None:
        pt, ph, pw = self.patch_dims
        rows, cols = self.latent_height // ph, self.latent_width // pw
        self.time_embed = nn.Sequential(
            nn.Linear(self.hidden_size, self.time_embed_dim), nn.SiLU(), nn.Linear(self.time_embed_dim, self.time_embed_dim)
        )
        if self.ofs_embed_dim is not None:
            self.ofs_embed = nn.Sequential(
                nn.Linear(self.ofs_embed_dim, self.ofs_embed_dim), nn.SiLU(), nn.Linear(self.ofs_embed_dim, self.ofs_embed_dim)
            )
        grid = dict(height=rows, width=cols, compressed_num_frames=self.compressed_num_frames, hidden_size=self.hidden_size)
        pos_config = configs["pos_embed_config"]
        pos_extra: dict[str, Any] = {}
        if not self.is_v10:  # HEAD passes the interpolation factors on
            pos_extra = dict(zip(("height_interpolation", "width_interpolation", "time_interpolation"), self.interpolation))
        if str(pos_config.get("target", "")).endswith("Rotary3DPositionEmbeddingMixin"):
            pos_extra["persistent_freqs"] = self.is_v10
        self.add_mixin("pos_embed", instantiate(pos_config, **grid, **pos_extra), reinit=True)
        self.add_mixin(
            "patch_embed",
            instantiate(configs["patch_embed_config"], patch_size=self.patch_size, hidden_size=self.hidden_size, in_channels=self.in_channels),
            reinit=True,
        )
        adaln_extra = dict(height=rows, width=cols) if self.is_v10 else {}
        shared = dict(hidden_size=self.hidden_size, time_embed_dim=self.time_embed_dim, elementwise_affine=self.elementwise_affine)
        head = self.hidden_size // self.num_attention_heads
        adaln = instantiate(configs["adaln_layer_config"], num_layers=self.num_layers, compressed_num_frames=self.compressed_num_frames,
                            hidden_size_head=head, **shared, **adaln_extra)
        self.add_mixin("adaln_layer", adaln)
        final = instantiate(configs["final_layer_config"], patch_size=self.patch_size, out_channels=self.out_channels,
                            latent_width=self.latent_width, latent_height=self.latent_height, **shared)
        self.add_mixin("final_layer", final, reinit=True)
        if "lora_config" in configs:
            self.add_mixin("lora", instantiate(configs["lora_config"], layer_num=self.num_layers), reinit=True)

    # ---------------------------------------------------------------------------------------
    # Forward

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """x (B, T, C_in, h, w), timesteps (B,) DDPM indices, context (B, N_txt, 4096) -> (B, T, C_out, h, w)."""
        if y is not None:
            raise ValueError("this DiT is not class-conditional: y must be None")
        if timesteps is None or context is None:
            raise ValueError("the DiT needs timesteps and context")
        batch, frames, _, height, width = x.shape
        pt, ph, pw = self.patch_dims
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"input of {frames} x {height} x {width} latents is not divisible by the patch {self.patch_dims}")
        x = x.to(self.dtype)
        concat_images = kwargs.pop("concat_images", None)  # training-time image concat, kept for parity
        if concat_images is not None:
            if concat_images.shape[0] != batch:
                concat_images = concat_images.repeat(2, 1, 1, 1, 1)  # (B/2, ...) -> (B, ...)
            x = torch.cat([x, concat_images.to(x.dtype)], dim=2)  # (B, T, C + C_img, h, w)
        emb = self.time_embed(positions.timestep_embedding(timesteps, self.hidden_size).to(self.dtype))  # (B, D_t)
        if self.ofs_embed_dim is not None:
            ofs = kwargs.pop("ofs", None)
            if ofs is None:
                raise ValueError("this DiT (1.5 image-to-video) needs ofs")
            ofs = torch.as_tensor(ofs, device=x.device).reshape(-1)  # (1,) or (B,)
            emb = emb + self.ofs_embed(positions.timestep_embedding(ofs, self.ofs_embed_dim).to(self.dtype))
        else:
            kwargs.pop("ofs", None)
        kwargs.update(
            images=x,
            emb=emb,
            encoder_outputs=context.to(self.dtype),
            text_length=context.shape[1],
            seq_length=frames * height * width // prod(self.patch_dims),
            rope_T=frames // pt,
            rope_H=height // ph,
            rope_W=width // pw,
        )
        ones = torch.ones((1, 1), dtype=x.dtype, device=x.device)
        with sat_runtime():
            if self.speed_blocks is not None:  # cogvid.speed: compiled blocks, another attention kernel, a step cache
                return self.speed_blocks(ones, kwargs)
            return super().forward(input_ids=ones, position_ids=ones, attention_mask=ones, **kwargs)[0]

    # ---------------------------------------------------------------------------------------
    # Loading support

    def optional_state_keys(self) -> set[str]:
        """Keys a checkpoint may hold or lack: unused, or recomputed by :meth:`materialize_derived_`."""
        keys = {_UNUSED_POSITION_TABLE, *_ROPE_BUFFERS}
        if isinstance(self.mixins["pos_embed"], Basic3DPositionEmbeddingMixin):
            keys.add(_SINCOS_TABLE)
        return keys

    def materialize_derived_(self, *, device: torch.device | str, dtype: torch.dtype) -> None:
        """Fill what is still on the meta device after loading with its fixed values.

        That is the unused ``transformer.position_embeddings`` table (zeros), the v1.0 RoPE
        buffers and the 2B's sin-cos table. Anything else left on meta is a CheckpointError.
        """
        from cogvid.errors import CheckpointError

        device = torch.device(device)
        pos = self.mixins["pos_embed"]
        embeddings = getattr(self.transformer, "position_embeddings", None)
        if embeddings is not None and embeddings.weight.is_meta:
            embeddings.weight = nn.Parameter(torch.zeros(embeddings.weight.shape, device=device, dtype=dtype))
        if isinstance(pos, Rotary3DPositionEmbeddingMixin) and getattr(pos, "freqs_sin", None) is not None and pos.freqs_sin.is_meta:
            pos.freqs_sin = torch.empty(pos.freqs_sin.shape, device=device, dtype=dtype)
            pos.freqs_cos = torch.empty(pos.freqs_cos.shape, device=device, dtype=dtype)
            pos.fill_freqs_()
        if isinstance(pos, Basic3DPositionEmbeddingMixin) and pos.pos_embedding.is_meta:
            pos.pos_embedding = nn.Parameter(torch.zeros(pos.pos_embedding.shape, device=device, dtype=dtype), requires_grad=False)
            pos.fill_table_()
        left = [name for name, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if left:
            raise CheckpointError(f"{len(left)} DiT tensor(s) were not loaded: {', '.join(left[:5])}")

    def assign_state_(self, state: Mapping[str, torch.Tensor]) -> None:
        """Assign tensors by key (no copy), also where SAT's LoRA loader would only ``copy_``."""
        self.load_state_dict(dict(state), strict=False, assign=True)
        for key, value in state.items():
            owner_name, _, name = key.rpartition(".")
            owner = self.get_submodule(owner_name)
            current = getattr(owner, name)
            if current is not value and getattr(current, "is_meta", False):
                if isinstance(current, nn.Parameter):
                    setattr(owner, name, nn.Parameter(value, requires_grad=current.requires_grad))
                else:
                    setattr(owner, name, value)

    def describe(self) -> str:
        """A short summary, e.g. "hidden 3072, 42 layers, patch [2, 2, 2], in 32"."""
        lora = ", LoRA" if "lora" in self.mixins else ""
        return f"hidden {self.hidden_size}, {self.num_layers} layers, patch {self.patch_size}, in-channels {self.in_channels}{lora}"


def build_dit(network_config: Any, *, dtype: torch.dtype, device: torch.device | str | None = None) -> DiffusionTransformer:
    """Instantiate the DiT of a ``network_config`` node with a torch dtype (and optional device)."""
    name = dtype_name(dtype)
    if name not in DTYPE_ALIASES:
        raise ConfigError(f"unsupported DiT dtype {dtype}; use one of float32, float16, bfloat16")
    extra: dict[str, Any] = {"dtype": name}
    if device is not None:
        extra["device"] = str(device)
    model = instantiate(network_config, **extra)
    if not isinstance(model, DiffusionTransformer):
        raise ConfigError(f"network_config builds {type(model).__name__}, not the CogVideoX DiT")
    return model


def load_dit(
    network_config: Any,
    folder: Path | str,
    *,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> DiffusionTransformer:
    """Build the DiT of ``network_config`` on the meta device and assign the checkpoint's weights.

    No random initialisation happens: parameters are created on ``meta``, the memory-mapped
    checkpoint tensors are cast to ``dtype``/``device`` and assigned, and the tables the
    original recomputes (sin-cos / RoPE) are computed. Keys are checked strictly
    (CheckpointError on mismatch); T5/VAE keys of full-engine files are ignored.
    """
    model = build_dit(network_config, dtype=dtype, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    optional = model.optional_state_keys()
    device = torch.device(device)
    if is_diffusers_part(folder):  # transformer/ of a diffusers folder: config.json + safetensors
        from cogvid.diffusers_weights import read_dit

        required = {k: shape for k, shape in expected.items() if k not in optional}
        assigned = read_dit(Path(folder), required, what=f"DiT ({model.describe()})", dtype=dtype, device=device)
        model.assign_state_(assigned)
        model.materialize_derived_(device=device, dtype=dtype)
        return model.eval()
    state = split_engine_state(read_state_dict(folder))["dit"]
    source = resolve_checkpoint_file(folder)
    looks_like = describe_dit_state(state) if state else "no DiT at all (no 'model.diffusion_model.' keys)"
    check_keys(expected, state, what=f"DiT ({model.describe()})", source=source, optional=optional, looks_like=looks_like)
    assigned = {k: v.to(device=device, dtype=dtype) for k, v in state.items() if k in expected}
    model.assign_state_(assigned)
    model.materialize_derived_(device=device, dtype=dtype)
    return model.eval()


def _layernorm(elementwise_affine: bool) -> Any:
    def make(*args: Any, **kwargs: Any) -> nn.Module:
        kwargs.setdefault("eps", 1e-6)  # SAT passes layernorm_epsilon (1e-5) at call time
        return LayerNorm(*args, elementwise_affine=elementwise_affine, **kwargs)

    return make


def _validate(
    num_classes: Any,
    input_time: str,
    use_swiglu: bool,
    use_rmsnorm: bool,
    dtype: str,
    patch_size: Any,
    modules: dict | None,
    hidden_size: int,
    heads: int,
) -> None:
    where = "model.network_config.params"
    if num_classes is not None:
        raise ConfigError(f"{where}.num_classes: class-conditional DiTs are not used by any CogVideoX model; remove it")
    if input_time != "adaln":
        raise ConfigError(f"{where}.input_time: only 'adaln' exists in the original, got {input_time!r}")
    if use_swiglu or use_rmsnorm:
        raise ConfigError(f"{where}: use_SwiGLU / use_RMSNorm are not used by any CogVideoX model; remove them")
    if dtype not in DTYPE_ALIASES:
        raise ConfigError(f"{where}.dtype: expected one of {', '.join(DTYPE_ALIASES)}, got {dtype!r}")
    if not isinstance(patch_size, int) and len(patch_size) != 3:
        raise ConfigError(f"{where}.patch_size: expected an int (1.0) or [t, h, w] (1.5), got {patch_size!r}")
    if hidden_size % heads:
        raise ConfigError(f"{where}: hidden_size {hidden_size} is not divisible by num_attention_heads {heads}")
    needed = ("pos_embed_config", "patch_embed_config", "adaln_layer_config", "final_layer_config")
    missing = [name for name in needed if name not in (modules or {})]
    if missing:
        raise ConfigError(f"{where}.modules: missing {', '.join(missing)}")
