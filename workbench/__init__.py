"""MADFormer Workbench: mixed autoregressive + diffusion image transformers.

import workbench as wb
cfg = wb.preset("tiny")
model = wb.build_model(cfg)
latents = wb.generate(model, cfg, num_images=4, steps=20, sampler="ddim", seed=0)
request = wb.sample_request(cfg, num_images=4, steps=20)  # one validated object: what generate_events takes
"""

from .core.config import Config
from .core.model import MADFormer, build_model
from .core.presets import preset
from .sampling.sampler import Event, generate, generate_events, sample_request
from .training.checkpoint import load_for_inference

__all__ = [
    "Config",
    "preset",
    "build_model",
    "MADFormer",
    "generate",
    "generate_events",
    "sample_request",
    "Event",
    "load_for_inference",
]
__version__ = "0.1.0"
