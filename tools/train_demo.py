"""Train the `cogvideox-tiny` demo model on the synthetic world of tools/demo_world.py (CPU only).

Usage: python tools/train_demo.py --out DIR --seed 0 [--vae-steps N --dit-steps N --stages vae,decoder,t5,dit]

Stages, each seeded on its own (so running them one by one gives the same files as one run):
1. ``vae``: the tiny 3D causal VAE (cogvid.vae Encoder3D/Decoder3D in the released layout) as an
   autoencoder with a Gaussian posterior: object-weighted L1 + MSE reconstruction and a small KL
   term; first on single frames (cheap, learns the spatial code), then on whole clips.
2. ``decoder``: more steps for the decoder alone on whole clips (sharper shapes); the encoder and
   hence the latents stay fixed, so the DiT stage does not depend on it.
3. ``t5``: a SentencePiece word-level tokenizer trained on the caption grammar and a tiny T5
   encoder with seeded random weights, kept frozen (as the original keeps T5 frozen); the DiT's
   text projection learns to read it.
4. ``dit``: the tiny DiT (cogvid.dit, v1.0 layout; patch size 1, one token per latent pixel, as 4 x 4
   latents leave little room: with the released 2 x 2 patches squares and circles blur together)
   with the original objective: DDPM timestep t uniform in [0, 1000), a = sqrt(alpha_cumprod_t)
   of the zero-SNR schedule, x_t = a x0 + sqrt(1 - a^2) eps, the denoiser (VideoScaling:
   x0 = a x_t - sqrt(1 - a^2) v, c_noise = t) and loss w (x0_hat - x0)^2 with w = 1 / (1 - a^2),
   i.e. v-prediction; the caption embedding is zeroed with probability 0.1 (the conditioner's
   ucg_rate) so classifier-free guidance works.

The output folder holds model.yaml and inference.yaml (original schema, paths relative to the
folder), transformer/{latest,1/mp_rank_00_model_states.pt}, vae/3d-vae.pt, t5-v1_1-xxl/ and
training.json (settings, losses, timings).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_world as world  # noqa: E402

LATENT_CHANNELS = 16
TEXT_LENGTH = 16
T5_WIDTH = 64
KL_WEIGHT = 1e-6
VAE_LR = 2e-3
OBJECT_WEIGHT = 5.0
UCG_RATE = 0.1
SHIFT_SCALE = 1.0
EXTRA_IDS = 100

_CODER: dict[str, Any] = {
    "double_z": True,
    "z_channels": LATENT_CHANNELS,
    "resolution": world.SIZE,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 1, 1, 1],  # 3 spatial halvings: 32 px -> 4 latent pixels
    "attn_resolutions": [],
    "num_res_blocks": 0,
    "dropout": 0.0,
}


def model_config(scale_factor: float, dit_layers: int = 3, hidden: int = 128, patch: int = 1) -> dict:
    """model.yaml of the demo model (original CogVideo SAT schema, v1.0 semantics)."""
    latent = world.SIZE // 8
    discretization = {
        "target": "sgm.modules.diffusionmodules.discretizer.ZeroSNRDDPMDiscretization",
        "params": {"shift_scale": SHIFT_SCALE},
    }
    return {
        "model": {
            "scale_factor": float(scale_factor),
            "disable_first_stage_autocast": True,
            "log_keys": ["txt"],
            "denoiser_config": {
                "target": "sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser",
                "params": {
                    "num_idx": 1000,
                    "quantize_c_noise": False,
                    "weighting_config": {"target": "sgm.modules.diffusionmodules.denoiser_weighting.EpsWeighting"},
                    "scaling_config": {"target": "sgm.modules.diffusionmodules.denoiser_scaling.VideoScaling"},
                    "discretization_config": copy.deepcopy(discretization),
                },
            },
            "network_config": {
                "target": "dit_video_concat.DiffusionTransformer",
                "params": {
                    "time_embed_dim": 64,
                    "elementwise_affine": True,
                    "num_frames": world.FRAMES,
                    "time_compressed_rate": 4,
                    "latent_width": latent,
                    "latent_height": latent,
                    "num_layers": dit_layers,
                    "patch_size": patch,
                    "in_channels": LATENT_CHANNELS,
                    "out_channels": LATENT_CHANNELS,
                    "hidden_size": hidden,
                    "adm_in_channels": 256,
                    "num_attention_heads": hidden // 64,
                    "transformer_args": {
                        "checkpoint_activations": False,
                        "vocab_size": 1,
                        "max_sequence_length": 64,
                        "layernorm_order": "pre",
                        "skip_init": False,
                        "model_parallel_size": 1,
                        "is_decoder": False,
                    },
                    "modules": {
                        "pos_embed_config": {
                            "target": "dit_video_concat.Basic3DPositionEmbeddingMixin",
                            "params": {"text_length": TEXT_LENGTH, "height_interpolation": 1.0, "width_interpolation": 1.0},
                        },
                        "patch_embed_config": {
                            "target": "dit_video_concat.ImagePatchEmbeddingMixin",
                            "params": {"text_hidden_size": T5_WIDTH},
                        },
                        "adaln_layer_config": {"target": "dit_video_concat.AdaLNMixin", "params": {"qk_ln": True}},
                        "final_layer_config": {"target": "dit_video_concat.FinalLayerMixin"},
                    },
                },
            },
            "conditioner_config": {
                "target": "sgm.modules.GeneralConditioner",
                "params": {
                    "emb_models": [
                        {
                            "is_trainable": False,
                            "input_key": "txt",
                            "ucg_rate": UCG_RATE,
                            "target": "sgm.modules.encoders.modules.FrozenT5Embedder",
                            "params": {"model_dir": "t5-v1_1-xxl", "max_length": TEXT_LENGTH},
                        }
                    ]
                },
            },
            "first_stage_config": {
                "target": "vae_modules.autoencoder.VideoAutoencoderInferenceWrapper",
                "params": {
                    "cp_size": 1,
                    "ckpt_path": "vae/3d-vae.pt",
                    "ignore_keys": ["loss"],
                    "loss_config": {"target": "torch.nn.Identity"},
                    "regularizer_config": {"target": "vae_modules.regularizers.DiagonalGaussianRegularizer"},
                    "encoder_config": {
                        "target": "vae_modules.cp_enc_dec.ContextParallelEncoder3D",
                        "params": {**copy.deepcopy(_CODER), "gather_norm": True},
                    },
                    "decoder_config": {
                        "target": "vae_modules.cp_enc_dec.ContextParallelDecoder3D",
                        "params": {**copy.deepcopy(_CODER), "gather_norm": False},
                    },
                },
            },
            "loss_fn_config": {
                "target": "sgm.modules.diffusionmodules.loss.VideoDiffusionLoss",
                "params": {
                    "offset_noise_level": 0,
                    "sigma_sampler_config": {
                        "target": "sgm.modules.diffusionmodules.sigma_sampling.DiscreteSampling",
                        "params": {"uniform_sampling": True, "num_idx": 1000, "discretization_config": copy.deepcopy(discretization)},
                    },
                },
            },
            "sampler_config": {
                "target": "sgm.modules.diffusionmodules.sampling.VPSDEDPMPP2MSampler",
                "params": {
                    "num_steps": 50,
                    "verbose": False,
                    "discretization_config": copy.deepcopy(discretization),
                    "guider_config": {
                        "target": "sgm.modules.diffusionmodules.guiders.DynamicCFG",
                        "params": {"scale": 6, "exp": 5, "num_steps": 50},
                    },
                },
            },
        }
    }


def inference_config() -> dict:
    """inference.yaml: float32, 9 frames (3 latent frames) at 32 x 32 (4 x 4 latents)."""
    return {
        "args": {
            "image2video": False,
            "latent_channels": LATENT_CHANNELS,
            "mode": "inference",
            "load": "transformer",
            "batch_size": 1,
            "sampling_image_size": [world.SIZE, world.SIZE],
            "sampling_num_frames": (world.FRAMES - 1) // 4 + 1,
            "sampling_fps": 8,
            "output_dir": "outputs",
            "force_inference": True,
        }
    }


def write_yaml(path: Path, data: dict, header: str) -> None:
    from omegaconf import OmegaConf

    path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(data)), encoding="utf-8")


# ------------------------------------------------------------------------------------------
# Seeded initialisation


def _init_tensor(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Fan-in scaled normal weights, zero biases, unit norm scales (SpatialNorm starts as GroupNorm)."""
    if len(shape) == 1:
        is_scale = name.endswith("weight") and ("norm" in name or "layernorm" in name)
        return torch.ones(shape) if is_scale else torch.zeros(shape)
    fan_in = math.prod(shape[1:])
    weight = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    if "conv_y" in name or "conv_b" in name:
        weight = weight * 0.1
    return weight


def _init_state(module: torch.nn.Module, generator: torch.Generator, zero: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    state = {}
    for name, value in module.state_dict().items():
        tensor = _init_tensor(name, value.shape, generator)
        if "conv_y.conv.bias" in name:
            tensor = torch.ones(value.shape)
        if any(part in name for part in zero):
            tensor = torch.zeros(value.shape)
        state[name] = tensor
    return state


# ------------------------------------------------------------------------------------------
# Stage 1: VAE


def build_vae_modules() -> tuple[torch.nn.Module, torch.nn.Module]:
    from cogvid.vae.coders import Decoder3D, Encoder3D

    with torch.device("meta"):
        encoder, decoder = Encoder3D(**_CODER), Decoder3D(**_CODER)
    return encoder, decoder


def _object_weight(video: torch.Tensor) -> torch.Tensor:
    """(B, 1, F, H, W) loss weight: 1 on the background, OBJECT_WEIGHT where the shape is."""
    corner = video[:, :, :, :1, :1]  # (B, 3, F, 1, 1): plain background at the corner
    on_object = (video - corner).abs().amax(dim=1, keepdim=True) > 1e-3
    return 1.0 + (OBJECT_WEIGHT - 1.0) * on_object.float()


def reconstruction_loss(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Object-weighted L1 + MSE of a reconstruction (the weights of ``_object_weight``)."""
    weight = _object_weight(video)
    error = recon - video
    return (weight * (error.abs() + error.pow(2))).mean() / weight.mean()


def train_vae(out: Path, seed: int, image_steps: int, video_steps: int, image_batch: int, video_batch: int, log: dict) -> None:
    """Train the VAE and write ``vae/3d-vae.pt``.

    First ``image_steps`` on single frames (cheap: the spatial code), then ``video_steps`` on whole
    clips (the temporal compression). Loss: object-weighted L1 + MSE, plus ``KL_WEIGHT`` x KL.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + 1)
    rng = np.random.default_rng(seed * 1000 + 1)
    encoder, decoder = build_vae_modules()
    encoder.load_state_dict(_init_state(encoder, generator), assign=True)
    decoder.load_state_dict(_init_state(decoder, generator), assign=True)
    params = [*encoder.parameters(), *decoder.parameters()]
    steps = image_steps + video_steps
    optimizer = torch.optim.AdamW(params, lr=VAE_LR, weight_decay=0.0, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps)))
    )
    start, losses = time.time(), []
    for step in range(steps):
        images = step < image_steps
        clips, _, _ = world.random_batch(rng, image_batch if images else video_batch, held_out=False)
        if images:  # one random frame of each clip: (B, F, H, W, 3) -> (B, 1, H, W, 3)
            pick = rng.integers(world.FRAMES, size=len(clips))
            clips = clips[np.arange(len(clips)), pick][:, None]
        video = torch.from_numpy(world.to_model_range(clips))  # (B, 3, F, H, W)
        moments = encoder(video)
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
        recon = decoder(z)
        rec = reconstruction_loss(recon, video)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3, 4)).mean()
        loss = rec + KL_WEIGHT * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(rec.item())
        if step % 25 == 0 or step == steps - 1:
            phase = "image" if images else "video"
            rec_avg, seconds = np.mean(losses[-25:]), time.time() - start
            print(f"vae {phase} step {step:5d}/{steps}  rec {rec_avg:.4f}  kl {kl.item():.1f}  {seconds:6.0f}s", flush=True)
    state = {f"encoder.{k}": v.detach() for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v.detach() for k, v in decoder.state_dict().items()})
    (out / "vae").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, out / "vae" / "3d-vae.pt")
    log["vae"] = {
        "image_steps": image_steps,
        "video_steps": video_steps,
        "image_batch": image_batch,
        "video_batch": video_batch,
        "seconds": round(time.time() - start, 1),
        "final_rec_loss": float(np.mean(losses[-25:])),
    }


def tune_decoder(out: Path, seed: int, steps: int, batch: int, log: dict) -> None:
    """Continue training only the decoder on whole clips (the encoder, hence the latents, stay fixed).

    Sharpens the shapes at a fraction of the cost of a full VAE step; the DiT stage does not
    depend on it (it only reads the encoder). Rewrites ``vae/3d-vae.pt``.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + 5)
    rng = np.random.default_rng(seed * 1000 + 5)
    encoder, decoder = load_vae(out)
    encoder.requires_grad_(False)
    decoder.train()
    params = list(decoder.parameters())
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=VAE_LR / 2, weight_decay=0.0, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / 20) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / steps)))
    )
    start, losses = time.time(), []
    for step in range(steps):
        clips, _, _ = world.random_batch(rng, batch, held_out=False)
        video = torch.from_numpy(world.to_model_range(clips))  # (B, 3, F, H, W)
        with torch.no_grad():
            mean, logvar = encoder(video).chunk(2, dim=1)
            z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn(mean.shape, generator=generator)
        recon = decoder(z)
        rec = reconstruction_loss(recon, video)
        optimizer.zero_grad(set_to_none=True)
        rec.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(rec.item())
        if step % 25 == 0 or step == steps - 1:
            print(f"decoder step {step:5d}/{steps}  rec {np.mean(losses[-25:]):.4f}  {time.time() - start:6.0f}s", flush=True)
    state = {f"encoder.{k}": v.detach() for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v.detach() for k, v in decoder.state_dict().items()})
    torch.save({"state_dict": state}, out / "vae" / "3d-vae.pt")
    log["decoder"] = {
        "steps": steps,
        "batch": batch,
        "seconds": round(time.time() - start, 1),
        "final_rec_loss": float(np.mean(losses[-25:])),
    }


def load_vae(out: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    encoder, decoder = build_vae_modules()
    state = torch.load(out / "vae" / "3d-vae.pt", map_location="cpu", weights_only=True)["state_dict"]
    encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")}, assign=True)
    decoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("decoder.")}, assign=True)
    return encoder.eval(), decoder.eval()


# ------------------------------------------------------------------------------------------
# Stage 2: tokenizer + frozen tiny T5


def grammar_corpus() -> list[str]:
    """Every caption of the grammar (both splits use the same words)."""
    return [text for attrs in world.all_attributes() for text in world.captions_of(attrs)]


def write_t5(out: Path, seed: int, log: dict) -> None:
    """A SentencePiece model on the caption grammar and a seeded tiny T5 encoder in HF layout."""
    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel

    folder = out / "t5-v1_1-xxl"
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(grammar_corpus()),
        model_writer=model,
        model_type="word",  # one piece per grammar word; other words become <unk>
        vocab_size=64,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        normalization_rule_name="nmt_nfkc_cf",  # case-folded: "A Red circle" reads as "a red circle"
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    pieces = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    (folder / "special_tokens_map.json").write_text(json.dumps({**special, "additional_special_tokens": sentinels}, indent=2))
    tokenizer_config = {
        **special,
        "tokenizer_class": "T5Tokenizer",
        "extra_ids": EXTRA_IDS,
        "additional_special_tokens": sentinels,
        "model_max_length": TEXT_LENGTH,
        "legacy": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    config = T5Config(
        vocab_size=pieces + EXTRA_IDS,
        d_model=T5_WIDTH,
        d_kv=T5_WIDTH // 4,
        d_ff=2 * T5_WIDTH,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        tie_word_embeddings=False,
        is_encoder_decoder=False,
        use_cache=False,
    )
    with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG; keep it untouched
        encoder = T5EncoderModel(config)
    generator = torch.Generator().manual_seed(seed * 1000 + 2)
    with torch.no_grad():
        for name, param in sorted(encoder.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            if "layer_norm" in name:
                param.copy_(torch.ones(param.shape))
            elif "relative_attention_bias" in name:
                param.copy_(0.5 * noise)
            elif "shared" in name or "embed_tokens" in name:
                param.copy_(noise)
            else:
                param.copy_(noise / math.sqrt(param.shape[-1]))
    encoder.save_pretrained(folder)
    log["t5"] = {"sentencepiece_pieces": pieces, "d_model": T5_WIDTH, "layers": 2}


def encode_captions(out: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    """caption -> (TEXT_LENGTH, T5_WIDTH) embedding with the shipped tokenizer and encoder."""
    from cogvid.text import FrozenT5Embedder

    embedder = FrozenT5Embedder(model_dir=str(out / "t5-v1_1-xxl"), max_length=TEXT_LENGTH, device="cpu").load()
    with torch.no_grad():
        embeddings = embedder(texts).float()
    return {text: embeddings[i] for i, text in enumerate(texts)}


# ------------------------------------------------------------------------------------------
# Stage 3: DiT


def encode_dataset(out: Path, seed: int, per_combo: int) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """Posterior moments (N, 2C, T, h, w) of ``per_combo`` clips of every training combination."""
    encoder, _ = load_vae(out)
    rng = np.random.default_rng(seed * 1000 + 3)
    pool = [attrs for attrs in world.all_attributes() if not attrs.held_out]
    clips, texts = [], []
    for attrs in pool:
        for _ in range(per_combo):
            clips.append(world.sample_clip(attrs, rng))
            texts.append(world.captions_of(attrs))
    moments = []
    with torch.no_grad():
        for begin in range(0, len(clips), 32):
            video = torch.from_numpy(world.to_model_range(np.stack(clips[begin : begin + 32])))
            moments.append(encoder(video))
    moments = torch.cat(moments)
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0), texts


def init_dit(network_config: dict, generator: torch.Generator) -> torch.nn.Module:
    """Build the DiT on meta and give it seeded weights (AdaLN-zero: modulations and output start at 0)."""
    from cogvid.config import instantiate

    dit = instantiate(network_config, dtype="fp32", device="meta")
    optional = set(dit.optional_state_keys())
    zero = ("adaLN_modulation", "final_layer.linear")
    state = {
        name: _init_state_entry(name, value.shape, generator, zero)
        for name, value in dit.state_dict().items()
        if name not in optional
    }
    dit.assign_state_(state)
    dit.materialize_derived_(device="cpu", dtype=torch.float32)
    return dit


def _init_state_entry(name: str, shape: torch.Size, generator: torch.Generator, zero: tuple[str, ...]) -> torch.Tensor:
    tensor = _init_tensor(name, shape, generator)
    return torch.zeros(shape) if any(part in name for part in zero) else tensor


def train_dit(out: Path, seed: int, steps: int, batch: int, per_combo: int, layers: int, hidden: int, patch: int, log: dict) -> None:
    """Train the DiT on VAE latents of the training split and write ``transformer/`` + the YAMLs."""
    from cogvid.checkpoint import DIT_PREFIX, save_checkpoint
    from cogvid.config import instantiate
    from cogvid.dit._sat import sat_runtime

    start = time.time()
    mean, logvar, texts = encode_dataset(out, seed, per_combo)
    scale_factor = float(1.0 / mean.std())
    vocabulary = sorted({text for options in texts for text in options})
    embeddings = encode_captions(out, vocabulary)
    text_table = torch.stack([embeddings[t] for t in vocabulary])  # (V, N_txt, D)
    text_index = {t: i for i, t in enumerate(vocabulary)}
    options = [[text_index[t] for t in clip_texts] for clip_texts in texts]
    encode_seconds = time.time() - start
    print(f"dit data: {mean.shape[0]} clips, {len(vocabulary)} captions, scale_factor {scale_factor:.4f}, {encode_seconds:.0f}s", flush=True)

    cfg = model_config(scale_factor, layers, hidden, patch)["model"]
    generator = torch.Generator().manual_seed(seed * 1000 + 4)
    dit = init_dit(cfg["network_config"], generator)
    dit.train()
    denoiser = instantiate(cfg["denoiser_config"])
    table = denoiser.sigmas.float()  # table[t] = sqrt(alpha_cumprod_t) after shift and zero-SNR rescale

    def network(x: torch.Tensor, c_noise: torch.Tensor, cond: dict, **extra: Any) -> torch.Tensor:
        return dit(x, timesteps=c_noise, context=cond["crossattn"])

    params = [p for p in dit.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / steps)))
    )
    losses = []
    train_start = time.time()
    for step in range(steps):
        pick = torch.randint(mean.shape[0], (batch,), generator=generator)
        std = torch.exp(0.5 * logvar[pick])
        z = (mean[pick] + std * torch.randn(std.shape, generator=generator)) * scale_factor
        x0 = z.permute(0, 2, 1, 3, 4)  # (B, C, T, h, w) -> (B, T, C, h, w)
        chosen = [options[int(i)][int(torch.randint(len(options[int(i)]), (1,), generator=generator))] for i in pick]
        context = text_table[chosen]  # (B, N_txt, D)
        keep = (torch.rand(batch, generator=generator) >= UCG_RATE).float()
        context = context * keep[:, None, None]
        idx = torch.randint(1000, (batch,), generator=generator)
        alpha = table[idx]
        noise = torch.randn(x0.shape, generator=generator)
        shape = (batch, 1, 1, 1, 1)
        noised = x0 * alpha.view(shape) + noise * (1 - alpha**2).sqrt().view(shape)
        denoised = denoiser(network, noised, alpha, {"crossattn": context}, idx=idx)
        weight = (1.0 / (1.0 - alpha**2)).view(shape)
        loss = (weight * (denoised - x0) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        with sat_runtime():  # SAT's model-parallel layers look up their (one-rank) group in backward too
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"dit step {step:5d}/{steps}  v-loss {np.mean(losses[-100:]):.4f}  {time.time() - train_start:6.0f}s", flush=True)

    optional = set(dit.optional_state_keys())
    state = {DIT_PREFIX + k: v.detach().clone() for k, v in dit.state_dict().items() if k not in optional}
    if (out / "transformer").exists():
        shutil.rmtree(out / "transformer")
    save_checkpoint(out / "transformer", state, iteration=1)
    header = "# cogvideox-tiny (trained by tools/train_demo.py): original CogVideo SAT schema, v1.0 semantics.\n"
    write_yaml(out / "model.yaml", model_config(scale_factor, layers, hidden, patch), header)
    inference_header = "# cogvideox-tiny inference settings (float32; sampling_num_frames counts latent frames).\n"
    write_yaml(out / "inference.yaml", inference_config(), inference_header)
    log["dit"] = {
        "steps": steps,
        "batch": batch,
        "clips": int(mean.shape[0]),
        "layers": layers,
        "hidden": hidden,
        "patch_size": patch,
        "scale_factor": scale_factor,
        "seconds": round(time.time() - start, 1),
        "final_v_loss": float(np.mean(losses[-100:])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (the model folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-image-steps", type=int, default=1500, help="VAE steps on single frames")
    parser.add_argument("--vae-steps", type=int, default=800, help="VAE steps on whole clips")
    parser.add_argument("--vae-image-batch", type=int, default=16)
    parser.add_argument("--vae-batch", type=int, default=4)
    parser.add_argument("--decoder-steps", type=int, default=800, help="decoder-only steps on whole clips (stage 'decoder')")
    parser.add_argument("--dit-steps", type=int, default=8000)
    parser.add_argument("--dit-batch", type=int, default=32)
    parser.add_argument("--dit-layers", type=int, default=3)
    parser.add_argument("--dit-hidden", type=int, default=128)
    parser.add_argument("--dit-patch", type=int, default=1, help="DiT patch size in latent pixels (4 x 4 latents)")
    parser.add_argument("--clips-per-combo", type=int, default=16)
    parser.add_argument(
        "--stages", default="vae,decoder,t5,dit", help="comma-separated subset of vae,decoder,t5,dit (later stages read earlier outputs)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 or 2; 1 is faster on a busy machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, args.threads)))
    torch.set_flush_denormal(True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - {"vae", "decoder", "t5", "dit"}
    if unknown:
        parser.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    world_info = {"size": world.SIZE, "frames": world.FRAMES}
    log.update({"seed": args.seed, "threads": torch.get_num_threads(), "world": world_info, "torch": torch.__version__})
    started = time.time()
    if "vae" in stages:
        train_vae(args.out, args.seed, args.vae_image_steps, args.vae_steps, args.vae_image_batch, args.vae_batch, log)
    if "decoder" in stages:
        tune_decoder(args.out, args.seed, args.decoder_steps, args.vae_batch, log)
    if "t5" in stages:
        write_t5(args.out, args.seed, log)
    if "dit" in stages:
        train_dit(args.out, args.seed, args.dit_steps, args.dit_batch, args.clips_per_combo, args.dit_layers, args.dit_hidden, args.dit_patch, log)
    log_path.write_text(json.dumps(log, indent=2) + "\n")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
