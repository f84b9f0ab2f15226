"""diffusers' CogVideoX pipelines assembled from the same tiny weights as a cogvid model (test-only)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from fixtures.dit_diffusers import diffusers_transformer
from fixtures.vae_diffusers import diffusers_vae


def sat_alphas(num_steps: int, shift_scale: float) -> tuple[list[int], list[float]]:
    """The original sampler's timesteps (loop order) and its subset-rescaled sqrt(alpha_cumprod)."""
    from cogvid.diffusion.discretization import ZeroSNRDDPMDiscretization

    alphas, timesteps = ZeroSNRDDPMDiscretization(shift_scale=shift_scale)(
        num_steps, do_append_zero=False, flip=True, return_idx=True
    )
    return [int(t) for t in timesteps], [float(a) for a in alphas]


def reference_pipeline(
    pipe, *, original_alphas: bool, num_steps: int, image_to_video: bool = False, raw_image_latents: bool = False
):
    """A diffusers CogVideoX(ImageToVideo)Pipeline holding the cogvid pipeline's weights.

    ``original_alphas=True`` writes the original sampler's subset-rescaled alphas into the
    scheduler's table at the timesteps it visits (REFERENCE §5.5 item 1), so only the remaining
    documented difference (the denoiser's table quantization) separates the two.

    For a CogVideoX 1.5 model the VAE gets ``invert_scale_latents=True`` as diffusers' converter sets
    it, so the I2V image latent is diffusers' ``sample / scaling_factor``; ``raw_image_latents=True``
    gives the pipeline the original's raw sample instead (sample_video HEAD, REFERENCE §7.3).
    """
    from diffusers import CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline, CogVideoXPipeline
    from transformers import T5EncoderModel, T5Tokenizer

    engine = pipe.engine
    cfg = engine.cfg
    net_params = OmegaConf.to_container(cfg.model.network_config.params, resolve=True)
    dit_state = {k: v.detach().float().clone() for k, v in engine.network.state_dict().items()}
    transformer = diffusers_transformer(net_params, dit_state)
    is_15 = not isinstance(net_params["patch_size"], int)
    coder = cfg.model.first_stage_config.params.decoder_config.params
    vae_state = {k: v.detach().float().clone() for k, v in engine.first_stage.state_dict().items()}
    vae = diffusers_vae(vae_state, coder.ch, list(coder.ch_mult), coder.num_res_blocks, invert_scale_latents=is_15)
    vae.config.scaling_factor = float(cfg.model.scale_factor)
    t5_dir = Path(engine.conditioner.embedders[0].model_dir)
    discretization = cfg.model.denoiser_config.params.discretization_config
    shift = float((discretization.get("params") or {}).get("shift_scale", 1.0))
    scheduler = CogVideoXDDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", snr_shift_scale=shift,
        rescale_betas_zero_snr=True, prediction_type="v_prediction", set_alpha_to_one=True,
        timestep_spacing="trailing", clip_sample=False,
    )
    if original_alphas:
        timesteps, alphas = sat_alphas(num_steps, shift)
        for t, a in zip(timesteps, alphas):
            scheduler.alphas_cumprod[t] = a * a
    cls = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
    pipeline = cls(
        tokenizer=T5Tokenizer.from_pretrained(str(t5_dir)),
        text_encoder=T5EncoderModel.from_pretrained(str(t5_dir)).eval(),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
    if raw_image_latents:
        if not (image_to_video and is_15):
            raise ValueError("raw_image_latents is for CogVideoX 1.5 image-to-video pipelines")
        stock = pipeline.prepare_latents

        def prepare_latents(*args, **kwargs):
            latents, image_latents = stock(*args, **kwargs)
            return latents, image_latents * pipeline.vae_scaling_factor_image  # undo diffusers' 1 / scaling_factor

        pipeline.prepare_latents = prepare_latents
    return pipeline


def write_tiny_i2v_model(folder: Path, seed: int = 0, num_frames: int = 17, generation: str = "1.0") -> list[Path]:
    """A tiny I2V model beside the demo model's VAE and T5: 5B-I2V style (learned positions, 32 input
    channels) for ``generation="1.0"``, 1.5-I2V style ([2, 2, 2] patch, ``ofs`` embedding) for "1.5".

    ``num_frames`` sizes the position tables (the released 1.0 models' is 49 frames).

    Returns its two YAMLs (model, inference) in the original schema with absolute paths, so it loads
    through ``cogvid.load(configs=...)`` like a user's own copies of the original files.
    """
    return _write_tiny_model(folder, seed, num_frames, generation, image_to_video=True)


def write_tiny_v15_t2v_model(folder: Path, seed: int = 0, num_frames: int = 17) -> list[Path]:
    """A tiny CogVideoX 1.5 T2V model (cogvideox1.5_5b.yaml style: [2, 2, 2] patch, 16 input channels,
    no ``ofs``) beside the demo model's VAE and T5; returns its two YAMLs like :func:`write_tiny_i2v_model`."""
    return _write_tiny_model(folder, seed, num_frames, "1.5", image_to_video=False)


def _write_tiny_model(
    folder: Path, seed: int, num_frames: int, generation: str, image_to_video: bool, sincos: bool = False, rope_t2v: bool = False
) -> list[Path]:
    """The test-tiny config turned into a 1.0 I2V, 1.0 2B-style, 1.5 I2V or 1.5 T2V model with fresh random DiT weights
    (``rope_t2v``: test-tiny's own 5B-style configuration)."""
    import yaml

    from cogvid.checkpoint import DIT_PREFIX, save_checkpoint
    from cogvid.config import instantiate, load_config
    from cogvid.registry import get_model

    tiny = get_model("test-tiny")
    model_yaml, inference_yaml = tiny.config_files()
    cfg = OmegaConf.to_container(load_config([model_yaml, inference_yaml]), resolve=True)
    net = cfg["model"]["network_config"]["params"]
    if image_to_video:
        net["in_channels"] = 32
    net["num_frames"] = num_frames
    cfg["args"]["sampling_num_frames"] = (num_frames - 1) // 4 + 1
    if sincos:
        text_length = net["modules"]["pos_embed_config"]["params"]["text_length"]
        net["modules"]["pos_embed_config"] = {
            "target": "dit_video_concat.Basic3DPositionEmbeddingMixin",
            "params": {"text_length": text_length, "height_interpolation": 1.875, "width_interpolation": 1.875},
        }
        cfg["model"]["scale_factor"] = 1.15258426
        for node in (cfg["model"]["denoiser_config"]["params"], cfg["model"]["sampler_config"]["params"]):
            node["discretization_config"] = {**node["discretization_config"], "params": {"shift_scale": 3.0}}
    elif generation == "1.0":
        if image_to_video:
            net["modules"]["pos_embed_config"]["params"]["learnable_pos_embed"] = True
        elif not rope_t2v:
            raise ValueError("a 1.0 T2V model with RoPE is test-tiny itself (rope_t2v=True writes one)")
    else:
        net["patch_size"] = [2, 2, 2]
        if image_to_video:
            net["ofs_embed_dim"] = net["time_embed_dim"]
        cfg["args"]["sampling_num_frames"] += 1  # 1.5 adds one padding latent
    demo = tiny.weight_paths()
    cfg["model"]["first_stage_config"]["params"]["ckpt_path"] = str(demo["vae"])
    cfg["model"]["conditioner_config"]["params"]["emb_models"][0]["params"]["model_dir"] = str(demo["t5"])
    cfg["args"]["image2video"] = image_to_video
    cfg["args"]["load"] = str(folder / "transformer")
    dit = instantiate(OmegaConf.create(cfg["model"]["network_config"]), dtype="fp32", device="meta")
    optional = set(dit.optional_state_keys())
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in dit.state_dict().items():
        if key in optional:
            continue
        noise = torch.randn(value.shape, generator=generator)
        if value.dim() == 1:
            state[key] = 1.0 + 0.1 * noise if key.endswith("weight") else 0.02 * noise
        else:
            state[key] = noise / value[0].numel() ** 0.5
    save_checkpoint(folder / "transformer", {DIT_PREFIX + k: v for k, v in state.items()}, iteration=1)
    model_path, inference_path = folder / "model.yaml", folder / "inference.yaml"
    model_path.write_text(yaml.safe_dump({"model": cfg["model"]}, sort_keys=False))
    inference_path.write_text(yaml.safe_dump({"args": cfg["args"]}, sort_keys=False))
    return [model_path, inference_path]
