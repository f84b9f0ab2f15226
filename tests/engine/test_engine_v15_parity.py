"""CogVideoX 1.5 end to end vs diffusers' CogVideoX(ImageToVideo)Pipeline on the same tiny weights (fp32, CPU).

Both sample the same latents: 17 frames -> 5 latents + 1 padding latent = 6 (sample_video HEAD takes
``T = 22`` for 81 frames; diffusers adds ``additional_frames = 1``), from the same initial noise, with
DDIM and dynamic CFG. As in the 1.0 tests, diffusers gets the original's zero unconditional input and
subset-rescaled alphas, and cogvid's alpha quantization (REFERENCE §5.2) is switched off; the sampled
latents are compared, then frames decoded with cogvid's diffusers-style schedule.

Where the original (``sat/`` at HEAD, the only code for 1.5) and diffusers differ, cogvid follows the
original, and each difference is shown to be real:
- I2V image latent: sample_video HEAD encodes (``encode_first_stage``: sample x scale_factor), then
  divides by ``model.scale_factor`` -> the raw posterior sample; diffusers (``invert_scale_latents``,
  set by its 1.5 converter) uses ``sample / scaling_factor``;
- decode: HEAD ``decode_first_stage`` drops latent 0 and turns every other latent into 4 frames
  (6 -> 20, 22 -> 84); diffusers drops the padding latent and decodes 4n-3 frames (17, 81).
The same in both (so checked, not switched): where the padding latent sits (the image at latent 0,
zeros after, latent 0 dropped before decoding), ``ofs = 2.0`` for I2V, and the zero unconditional
input (HEAD sample_video still forces it; tested for 1.0 in test_engine_parity.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

import cogvid  # noqa: E402
from cogvid.video import frames_to_uint8  # noqa: E402
from e2e_reference import reference_pipeline, write_tiny_i2v_model, write_tiny_v15_t2v_model  # noqa: E402
from fixtures.margins import assert_beyond, assert_within  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.slow]

STEPS = 5  # a divisor of 1000, so diffusers' trailing timesteps equal the original's (see test_engine_i2v_parity.py)
FRAMES = 17
LATENTS = 6  # (17 - 1) // 4 + 1 = 5, plus the 1.5 padding latent
HEIGHT, WIDTH = 48, 64
IMAGE_SEED = 5  # the generator of the I2V posterior sample, seeded alike on both sides
# Max abs errors against diffusers, measured with tools/check_portability.py (ATEN default/avx2/avx512,
# oneDNN and MKL AVX2, 1-2 threads):
LATENT_TOLERANCE = 1e-4  # latents reach |x| ~ 6; measured max 8.3e-6. The alpha quantization moves them 1.5e-3
FRAME_TOLERANCE = 1e-4  # frames in [0, 1]; measured max 1.7e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models are fastest on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def i2v(tmp_path_factory):
    return cogvid.load(configs=write_tiny_i2v_model(tmp_path_factory.mktemp("v15-i2v"), generation="1.5"))


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    return cogvid.load(configs=write_tiny_v15_t2v_model(tmp_path_factory.mktemp("v15-t2v")))


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.full((HEIGHT, WIDTH, 3), 240, dtype=np.uint8)
    pixels[10:30, 20:40] = (30, 60, 220)
    pixels += rng.integers(0, 10, pixels.shape, dtype=np.uint8)
    return Image.fromarray(pixels)


def _noise() -> torch.Tensor:
    return torch.randn((1, LATENTS, 16, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(FRAMES))


def _diffusers(pipe, prompt: str, *, image: Image.Image | None = None, raw_image_latents: bool = False) -> dict[str, Any]:
    """diffusers' pipeline on ``pipe``'s weights: final latents (before it drops the padding latent),
    frames in [0, 1] (F, 3, H, W), the kwargs of every transformer call, and the pipeline itself."""
    reference = reference_pipeline(
        pipe, original_alphas=True, num_steps=STEPS, image_to_video=image is not None, raw_image_latents=raw_image_latents
    )
    reference.set_progress_bar_config(disable=True)
    max_length = pipe.engine.conditioner.embedders[0].max_length
    embeds, _ = reference.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=max_length)
    calls: list[dict[str, Any]] = []
    hook = reference.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(dict(kwargs)), with_kwargs=True
    )
    seen: dict[str, torch.Tensor] = {}

    def keep_latents(pipeline, step, timestep, tensors):
        seen["latents"] = tensors["latents"].clone()
        return {}

    extra = {"image": image, "generator": torch.Generator().manual_seed(IMAGE_SEED)} if image is not None else {}
    try:
        frames = reference(
            prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds),  # the original's unconditional input
            num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=6.0,
            use_dynamic_cfg=True, latents=_noise(), output_type="pt", max_sequence_length=max_length,
            callback_on_step_end=keep_latents, **extra,
        ).frames[0]
    finally:
        hook.remove()
    return {"latents": seen["latents"], "frames": frames, "calls": calls, "pipeline": reference}


def _ours(pipe, prompt: str, *, image: Image.Image | None = None, quantize: bool = True) -> dict[str, Any]:
    """cogvid's DDIM run from the same noise: the Video and the ``ofs`` of every DiT call.
    ``quantize=False`` turns off the denoiser's alpha quantization (the original's; diffusers has none)."""
    ofs: list[Any] = []
    hook = pipe.engine.network.register_forward_pre_hook(
        lambda module, args, kwargs: ofs.append(kwargs.get("ofs")), with_kwargs=True
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            if not quantize:
                patch.setattr(pipe.engine.denoiser, "possibly_quantize_sigma", lambda sigma: sigma)
            video = pipe.generate(
                prompt, image=image, num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=STEPS, sampler="ddim",
                guidance=6.0, latents=_noise(), seed=IMAGE_SEED,
            )
    finally:
        hook.remove()
    return {"video": video, "ofs": ofs}


def _as_unit(frames: torch.Tensor) -> torch.Tensor:
    """cogvid decode output (1, F, 3, H, W) in [-1, 1] -> (F, 3, H, W) in [0, 1], like diffusers' "pt" output."""
    return ((frames[0] + 1) / 2).clamp(0, 1)


@pytest.fixture(scope="module")
def i2v_runs(i2v):
    prompt = "a blue square moving up"
    return {
        "theirs": _diffusers(i2v, prompt, image=_image(), raw_image_latents=True),
        "ours": _ours(i2v, prompt, image=_image(), quantize=False),
        "prompt": prompt,
    }


# ---------------------------------------------------------------- parity


def test_i2v_latents_match_diffusers_given_the_original_alphas_and_image_latent(i2v_runs):
    ours, theirs = i2v_runs["ours"]["video"].latents, i2v_runs["theirs"]["latents"]
    assert ours.shape == theirs.shape == (1, LATENTS, 16, HEIGHT // 8, WIDTH // 8)
    assert_within(ours, theirs, LATENT_TOLERANCE, "latents")


def test_i2v_frames_match_diffusers_with_its_decode_schedule(i2v, i2v_runs):
    ours = _as_unit(i2v.engine.decode(i2v_runs["ours"]["video"].latents, schedule="1.5-diffusers"))
    assert ours.shape == i2v_runs["theirs"]["frames"].shape == (FRAMES, 3, HEIGHT, WIDTH)
    assert_within(ours, i2v_runs["theirs"]["frames"], FRAME_TOLERANCE, "frames")


def test_t2v_latents_and_frames_match_diffusers(t2v):
    prompt = "a red circle moving left"
    assert t2v.spec.generation == "1.5" and t2v.spec.task == "t2v"
    theirs = _diffusers(t2v, prompt)
    ours = _ours(t2v, prompt, quantize=False)
    assert ours["video"].latents.shape == (1, LATENTS, 16, HEIGHT // 8, WIDTH // 8)
    assert_within(ours["video"].latents, theirs["latents"], LATENT_TOLERANCE, "latents")
    frames = _as_unit(t2v.engine.decode(ours["video"].latents, schedule="1.5-diffusers"))
    assert_within(frames, theirs["frames"], FRAME_TOLERANCE, "frames")
    assert set(ours["ofs"]) == {None} and {call.get("ofs") for call in theirs["calls"]} == {None}  # no ofs for T2V
    # T2V decodes like I2V: latent 0 dropped, 4 frames per latent by default (the original), 4n-3 in diffusers.
    assert ours["video"].frames.shape[0] == 4 * (LATENTS - 1) and theirs["frames"].shape[0] == FRAMES


def test_i2v_alpha_quantization_is_the_switched_off_difference(i2v, i2v_runs):
    """cogvid's default (the original's quantized alphas in the denoiser) really moves the result."""
    default = _ours(i2v, i2v_runs["prompt"], image=_image())["video"].latents
    assert_beyond(default, i2v_runs["ours"]["video"].latents, 5 * LATENT_TOLERANCE, "quantized alphas")  # measured 1.5e-3


def test_ofs_is_2_in_both_and_reaches_the_model(i2v_runs):
    ours, theirs = i2v_runs["ours"]["ofs"], i2v_runs["theirs"]["calls"]
    assert len(ours) == len(theirs) == STEPS  # one DiT call per step on the CFG batch
    assert all(torch.equal(value.cpu(), torch.tensor([2.0])) for value in ours)  # sample_video HEAD: ofs=tensor([2.0])
    assert all(torch.equal(call["ofs"], torch.tensor([2.0])) for call in theirs)  # diffusers: new_full((1,), 2.0)
    call = theirs[0]
    transformer = i2v_runs["theirs"]["pipeline"].transformer
    with torch.no_grad():
        at_2 = transformer(**{**call, "return_dict": False})[0]
        at_0 = transformer(**{**call, "ofs": torch.tensor([0.0]), "return_dict": False})[0]
    assert_beyond(at_2, at_0, 10 * LATENT_TOLERANCE, "ofs 0")  # the value matters, so the parity above checks it


# ---------------------------------------------------------------- differences: the original wins


def test_i2v_image_latent_is_the_raw_sample_not_diffusers_inverse_scaled(i2v, i2v_runs):
    engine = i2v.engine
    stock = reference_pipeline(i2v, original_alphas=True, num_steps=STEPS, image_to_video=True)
    assert stock.vae.config.invert_scale_latents  # what diffusers' converter sets for 1.5
    pixels = stock.video_processor.preprocess(_image(), height=HEIGHT, width=WIDTH)  # (1, 3, H, W) in [-1, 1]
    with torch.no_grad():
        raw = stock.vae.encode(pixels.unsqueeze(2)).latent_dist.sample(torch.Generator().manual_seed(IMAGE_SEED))
        # diffusers' own call: num_frames already grown by additional_frames * 4 (17 -> 21 -> 6 latents)
        _, theirs = stock.prepare_latents(
            pixels, 1, 16, FRAMES + 4, HEIGHT, WIDTH, torch.float32, torch.device("cpu"),
            torch.Generator().manual_seed(IMAGE_SEED), _noise(),
        )
    ours = engine.encode_image(pixels.unsqueeze(2), LATENTS, torch.Generator().manual_seed(IMAGE_SEED))
    assert ours.shape == theirs.shape == (1, LATENTS, 16, HEIGHT // 8, WIDTH // 8)
    # Same layout: the image at latent 0 (the slot that is dropped before decoding), zeros after.
    assert torch.count_nonzero(ours[:, 1:]) == 0 and torch.count_nonzero(theirs[:, 1:]) == 0
    assert_within(ours[:, 0], raw[:, :, 0], LATENT_TOLERANCE, "image latent")  # original: raw posterior sample
    assert_within(theirs[:, 0], raw[:, :, 0] / engine.scale_factor, LATENT_TOLERANCE, "diffusers image latent")  # / 0.7
    assert_beyond(ours, theirs, 0.1, "diffusers' image latent")
    # ... and it changes the video: diffusers with its own image latent ends far from the original's.
    stock_run = _diffusers(i2v, i2v_runs["prompt"], image=_image())
    assert_beyond(stock_run["latents"], i2v_runs["ours"]["video"].latents, 0.1, "diffusers' run")  # measured ~1.0


def test_default_decode_is_the_originals_4_frames_per_latent(i2v, i2v_runs):
    """HEAD decode_first_stage (verified against the original in tests/vae/test_vae_goldens.py): latent 0
    dropped, the other 5 in chunks [1:4], [4:6] without the first-frame rule -> 20 frames; diffusers 17."""
    video = i2v_runs["ours"]["video"]
    latents = video.latents
    decoded = i2v.engine.decode(latents)
    assert decoded.shape == (1, 4 * (LATENTS - 1), 3, HEIGHT, WIDTH)
    assert torch.equal(decoded, i2v.engine.decode(latents, schedule="1.5"))
    assert video.frames.shape == (20, HEIGHT, WIDTH, 3) and video.metadata["requested_frames"] == FRAMES
    assert np.array_equal(video.frames, frames_to_uint8(decoded[0]))  # generate() decodes this way by default
    # Latent 0 (the padding / image slot) is never decoded.
    shifted = latents.clone()
    shifted[:, 0] += 100.0
    assert torch.equal(i2v.engine.decode(shifted), decoded)
    # The last 8 frames come from latents 4 and 5 in both schedules, yet the values differ: the first
    # chunk (3 latents) keeps no first frame in the original but does in diffusers, and its conv caches
    # feed the last chunk.
    theirs = i2v_runs["theirs"]["frames"]
    assert theirs.shape[0] == 4 * (LATENTS - 1) - 3
    assert_beyond(_as_unit(decoded)[-8:], theirs[-8:], 1e-2, "last 8 frames")  # measured ~0.17
