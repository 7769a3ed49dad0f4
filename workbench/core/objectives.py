"""The objective a config trains with: VP diffusion (epsilon, v; diffusion.py) or rectified flow (flow.py)."""

from __future__ import annotations

from .config import DiffusionConfig, ModelConfig, objective_family
from .diffusion import Diffusion, Objective
from .flow import Flow

OBJECTIVES: dict[str, type[Objective]] = {c.family: c for c in (Diffusion, Flow)}  # config.objective_family


def build_objective(cfg: DiffusionConfig, model_cfg: ModelConfig) -> Objective:
    """The training objective and sampler factory of diffusion.prediction."""
    return OBJECTIVES[objective_family(cfg.prediction)](cfg, model_cfg)


__all__ = ["build_objective", "Objective", "OBJECTIVES"]
