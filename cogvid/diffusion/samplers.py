"""All inference samplers of the original ``sampling.py``, under their original names.

Which sampler fits which model:

* CogVideoX models (``DiscreteDenoiser`` + ``VideoScaling`` + ``ZeroSNRDDPMDiscretization``): all of
  them. The Video* samplers are the original algorithms; the sigma-space samplers run on these
  models through the change of variables described in :mod:`cogvid.diffusion.sigma_samplers`.
* sigma-space models (Eps/V/EDM scalings with EDM or LegacyDDPM discretizations): the sigma-space
  samplers only; a Video* sampler raises ConfigError at construction.
"""

from __future__ import annotations

from cogvid.diffusion.sampler_base import BaseDiffusionSampler, SamplingRun, StepCallback, draw_noise
from cogvid.diffusion.sigma_samplers import (
    DDIMSampler,
    DPMPP2MSampler,
    DPMPP2SAncestralSampler,
    EDMSampler,
    EulerAncestralSampler,
    EulerEDMSampler,
    HeunEDMSampler,
    LinearMultistepSampler,
    SDEDPMPP2MSampler,
    SigmaSampler,
)
from cogvid.diffusion.video_samplers import VideoDDIMSampler, VPODEDPMPP2MSampler, VPSDEDPMPP2MSampler

__all__ = [
    "BaseDiffusionSampler",
    "DDIMSampler",
    "DPMPP2MSampler",
    "DPMPP2SAncestralSampler",
    "EDMSampler",
    "EulerAncestralSampler",
    "EulerEDMSampler",
    "HeunEDMSampler",
    "LinearMultistepSampler",
    "SDEDPMPP2MSampler",
    "SamplingRun",
    "SigmaSampler",
    "StepCallback",
    "VPODEDPMPP2MSampler",
    "VPSDEDPMPP2MSampler",
    "VideoDDIMSampler",
    "draw_noise",
]
