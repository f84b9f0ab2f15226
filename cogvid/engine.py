"""VideoDiffusionEngine: conditioner + DiT + denoiser + sampler + VAE, assembled from a merged config.

The engine follows the original ``SATVideoDiffusionEngine`` and ``sample_video.py`` (REFERENCE §6-§7):
latents in the sampler layout (B, T, C, h, w); the initial noise drawn on the CPU in float32; the
unconditional input as zeros (or the encoded negative prompt); I2V image latents concatenated on the
channel axis of every DiT call; the 1.5-I2V ``ofs`` input; the chunked inference decode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cogvid.config import instantiate
from cogvid.errors import UsageError
from cogvid.lora import apply_loras_, check_fit, load_loras
from cogvid.offload import Placement, out_of_memory, place
from cogvid.registry import WeightPaths
from cogvid.request import LoraSpec
from cogvid.spec import Generation, ModelSpec

OFS_VALUE = 2.0  # sample_video (1.5-I2V) passes ofs = [2.0]


class DiTWrapper(nn.Module):
    """The original ``OpenAIWrapper``: cast conditioning to the DiT dtype, concat I2V latents, call the DiT."""

    def __init__(self, diffusion_model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.dtype = dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor], **extra: Any) -> torch.Tensor:
        cond = {key: value.to(self.dtype) for key, value in cond.items()}
        if "concat" in cond:
            x = torch.cat([x, cond["concat"].to(x.dtype)], dim=2)  # (B, T, C, h, w) + (B, T, C', h, w) on channels
        return self.diffusion_model(x, timesteps=timesteps, context=cond["crossattn"], y=cond.get("vector"), **extra)


class VideoDiffusionEngine(nn.Module):
    """All parts of a CogVideoX model, on one device and dtype (``.network``, ``.first_stage``, ...)."""

    def __init__(
        self,
        cfg: DictConfig,
        spec: ModelSpec,
        *,
        network: nn.Module,
        conditioner: nn.Module | None,
        first_stage: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = spec
        self.network = network
        self.model = DiTWrapper(network, dtype)
        self.conditioner = conditioner
        self.first_stage = first_stage
        self.denoiser = instantiate(cfg.model.denoiser_config)
        self.sampler_config = cfg.model.sampler_config
        self.scale_factor = float(cfg.model.scale_factor)
        self.device = device
        self.dtype = dtype
        self.placement = Placement("none")  # which part is on the device in each stage (see cogvid.offload)
        self.explain_memory: Callable[[str], tuple[str, str]] | None = None  # the memory plan's words for an OOM
        self.loras: tuple[LoraSpec, ...] = ()  # merged into the DiT weights by from_config

    @property
    def offload(self) -> str:
        """The offload mode: none, text, model or blocks (see :mod:`cogvid.memory_plan`)."""
        return self.placement.mode

    # ------------------------------------------------------------------ building

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        spec: ModelSpec,
        paths: WeightPaths,
        *,
        device: torch.device,
        dtype: torch.dtype,
        model_label: str = "the model",
        progress: Callable[[str], None] | None = None,
        lora: Sequence[LoraSpec] = (),
        text_encoder: bool = True,
        offload: str = "none",
    ) -> VideoDiffusionEngine:
        """Build every part from ``cfg`` and read the weights at ``paths`` (checked first).

        ``lora``: SAT LoRA checkpoints merged into the DiT's attention weights right after loading
        (each with its scale; see :mod:`cogvid.lora`). ``text_encoder=False`` leaves the T5 out (a
        process that receives its conditioning from another, :mod:`cogvid.parallel.runtime`).
        ``offload`` other than ``none`` reads every part
        into host memory and moves it to ``device`` only as its mode says (:func:`cogvid.offload.place`).
        """
        from cogvid.dit import load_dit

        paths.check(model_label)
        if spec.model_dtype == "bf16" and dtype == torch.float16:
            raise UsageError(
                f"{model_label} runs in bf16; fp16 overflows in its activations",
                hint="use --dtype bf16 (or fp32 on CPU)",
            )
        if device.type == "cpu" and dtype == torch.float16:
            raise UsageError("fp16 is not supported on the CPU", hint="use --dtype fp32 or bf16 on the CPU")
        report = progress or (lambda stage: None)
        loras = load_loras(lora)  # bad or mismatched LoRAs fail before the big checkpoint is read
        net_params = cfg.model.network_config.params
        check_fit([weights for weights, _ in loras], int(net_params.hidden_size), int(net_params.num_layers), model_label)
        host = device if offload == "none" else torch.device("cpu")
        with out_of_memory("loading", device):
            report("transformer")
            network = load_dit(cfg.model.network_config, paths.transformer, dtype=dtype, device=host)
            if loras:
                report("lora")
                apply_loras_(network, loras)
            report("vae")
            first_stage_node = OmegaConf.merge(cfg.model.first_stage_config, {"params": {"ckpt_path": str(paths.vae)}})
            first_stage = instantiate(first_stage_node, generation=spec.generation).to(device=host, dtype=dtype).eval()
            conditioner = None
            if text_encoder:
                report("text encoder")
                emb_models = OmegaConf.to_container(cfg.model.conditioner_config.params.emb_models, resolve=True)
                emb_models[0].setdefault("params", {})["model_dir"] = str(paths.t5)
                if paths.tokenizer is not None:  # diffusers layout: tokenizer/ beside text_encoder/
                    emb_models[0]["params"]["tokenizer_dir"] = str(paths.tokenizer)
                conditioner_node = OmegaConf.create({"target": cfg.model.conditioner_config.target, "params": {"emb_models": emb_models}})
                conditioner = instantiate(conditioner_node).to(device=host, dtype=dtype).eval()
            engine = cls(cfg, spec, network=network, conditioner=conditioner, first_stage=first_stage, device=device, dtype=dtype)
            if offload != "none":
                if conditioner is not None:
                    conditioner.load()  # T5 is read into host memory now, not onto the device at the first prompt
                engine.placement = place(engine, offload)
        engine.loras = tuple(lora)
        return engine

    # ------------------------------------------------------------------ conditioning

    @torch.no_grad()
    def encode_text(self, prompt: str, negative_prompt: str = "") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(cond, uncond) for one prompt; uncond is zeros as the original unless a negative prompt is given."""
        if self.conditioner is None:
            raise RuntimeError("this engine was loaded without its text encoder (text_encoder=False)")
        batch_c = {"txt": [prompt]}
        with out_of_memory("text", self.device, self.explain_memory):
            self.placement.enter("text")
            if negative_prompt:
                cond = self.conditioner({"txt": [prompt]})
                uncond = self.conditioner({"txt": [negative_prompt]})
            else:
                cond, uncond = self.conditioner.get_unconditional_conditioning(batch_c, {"txt": [""]}, ["txt"])
        return cond, uncond

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, latent_frames: int, generator: torch.Generator) -> torch.Tensor:
        """Image (1, 3, 1, H, W) in [-1, 1] -> conditioning latents (1, T, 16, h, w): the image at latent 0, zeros after.

        1.0 keeps ``VAE sample x scale_factor``; 1.5 divides by scale_factor again (the raw sample), as the originals do.
        """
        with out_of_memory("image", self.device, self.explain_memory):
            self.placement.enter("image")
            latent = self.first_stage.encode(image.to(self.device, self.dtype), generator=generator)  # (1, 16, 1, h, w)
        latent = latent * self.scale_factor
        if self.spec.generation is Generation.V1_5:
            latent = latent / self.scale_factor
        latent = latent.permute(0, 2, 1, 3, 4).contiguous()  # (1, 16, 1, h, w) -> (1, 1, 16, h, w)
        padding = latent.new_zeros(latent.shape[0], latent_frames - 1, *latent.shape[2:])
        return torch.cat([latent, padding], dim=1)  # (1, T, 16, h, w)

    # ------------------------------------------------------------------ sampling

    @property
    def sampler(self) -> Any:
        """The model's configured sampler (``sampler_config``), built fresh."""
        return self.build_sampler(self.sampler_config)

    def build_sampler(self, sampler_config: Any) -> Any:
        """The sampler of a ``{target, params}`` node (e.g. a :class:`~cogvid.prepare.SamplerChoice`'s)."""
        from cogvid.config import instantiate

        return instantiate(sampler_config)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor], **extra: Any) -> torch.Tensor:
        """The denoiser applied to the wrapped DiT (what the samplers call)."""
        return self.denoiser(self.model, x, sigma, cond, **extra)

    @torch.no_grad()
    def sample(
        self,
        cond: dict[str, torch.Tensor],
        uncond: dict[str, torch.Tensor],
        noise: torch.Tensor,
        sampler: Any,
        *,
        generator: torch.Generator,
        callback: Callable[[int, int, float], None] | None = None,
        denoiser: Callable[..., torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the sampler from ``noise`` (B, T, C, h, w) float32; returns latents (B, T, C, h, w) float32.

        The sampler's own float32 output, before the original's cast to the model dtype (that cast is
        the first step of :meth:`decode`), so a bf16/fp16 run keeps the full-precision latents.
        ``denoiser`` replaces :meth:`denoise` (e.g. the guidance split of :mod:`cogvid.parallel.runtime`).
        """
        x = noise.to(device=self.device, dtype=torch.float32)
        ofs = None
        if getattr(self.network, "ofs_embed_dim", None):
            ofs = torch.tensor([OFS_VALUE], device=self.device, dtype=torch.float32)
        with out_of_memory("denoising", self.device, self.explain_memory):
            self.placement.enter("denoising")
            return sampler(denoiser or self.denoise, x, cond, uc=uncond, ofs=ofs, generator=generator, callback=callback)

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        *,
        schedule: str | None = None,
        tiling: bool = False,
        callback: Callable[[int, int], None] | None = None,
        group: Any = None,
    ) -> torch.Tensor:
        """Latents (B, T, C, h, w) from the sampler -> frames (B, F, 3, H, W) float32 in [-1, 1].

        The original's order and dtypes (REFERENCE §7): the sampler output is cast to the model dtype
        (``SATVideoDiffusionEngine.sample`` ends with ``samples.to(self.dtype)``), then multiplied by
        ``1.0 / scale_factor`` in that dtype (``sample_video.py`` v1.0, ``decode_first_stage`` at
        HEAD), then decoded. In bf16, dividing the float32 latents before the cast instead moves the
        frames about as far as bf16 is from fp32; in fp32 the product and a division differ by at
        most one ulp. ``latents`` may be in any dtype or on any device (``Video.latents`` is float32).
        ``group``: a torch.distributed process group whose ranks decode together (context-parallel,
        :func:`cogvid.vae.parallel.decode_parallel`, same frames); every rank gets the frames. Tiled
        decoding runs whole on each rank.
        """
        z = latents.to(device=self.device, dtype=self.dtype)
        z = z.permute(0, 2, 1, 3, 4).contiguous()  # (B, T, C, h, w) -> (B, C, T, h, w)
        z = (1.0 / self.scale_factor) * z
        with out_of_memory("decoding", self.device, self.explain_memory):
            self.placement.enter("decoding")
            if group is not None and not tiling:
                from cogvid.vae.parallel import decode_parallel

                frames = decode_parallel(self.first_stage, z, schedule=schedule, group=group, callback=callback)
            else:
                frames = self.first_stage.decode(z, schedule=schedule, tiling=tiling, callback=callback)
        return frames.float().permute(0, 2, 1, 3, 4)  # (B, 3, F, H, W) -> (B, F, 3, H, W)

