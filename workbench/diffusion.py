"""The diffusion objective (DDPM noising with one timestep per image and block) and the samplers.

The schedule and every sampler come from diffusers' schedulers; this module only wires them to the model.

| code           | paper                                   |
|----------------|-----------------------------------------|
| alphas_cumprod | alpha-bar_t                             |
| t (B, T)       | one timestep per (image, block)         |
| epsilon        | eps-prediction target (default)         |
| v_prediction   | v = alpha_t * eps - sigma_t * x0        |
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from .blocks import block_index_map
from .config import DiffusionConfig, ModelConfig


def _schedule_kwargs(cfg: DiffusionConfig) -> dict:
    return dict(num_train_timesteps=cfg.train_steps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction)


def make_scheduler(name: str, cfg: DiffusionConfig, steps: int):
    """A fresh diffusers scheduler by name ("ddpm", "ddim", "dpm++2m", "euler") with `steps` set."""
    kw = _schedule_kwargs(cfg)
    if name == "ddpm":
        s = DDPMScheduler(**kw, clip_sample=False)
    elif name == "ddim":
        s = DDIMScheduler(**kw, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    elif name == "dpm++2m":
        s = DPMSolverMultistepScheduler(**kw, algorithm_type="dpmsolver++", solver_order=2,
                                        timestep_spacing="trailing", lower_order_final=True)
    elif name == "euler":
        s = EulerDiscreteScheduler(**kw, timestep_spacing="trailing")
    else:
        raise ValueError(f"sampler: unknown sampler {name!r}. Fix: use ddpm, ddim, dpm++2m or euler.")
    s.set_timesteps(steps)
    return s


@dataclass
class Losses:
    total: torch.Tensor      # diffusion + hidden_loss_weight * hidden
    diffusion: torch.Tensor  # MSE to the target (epsilon or v)
    hidden: torch.Tensor     # MSE of the z_cond decoder to the clean block (0 when the model has none)


class Diffusion:
    """Training-time DDPM process: noising per (image, block), targets and the loss."""

    def __init__(self, cfg: DiffusionConfig, model_cfg: ModelConfig):
        self.cfg = cfg
        self.model_cfg = model_cfg
        self.train_scheduler = DDPMScheduler(**_schedule_kwargs(cfg))
        self.alphas_cumprod = self.train_scheduler.alphas_cumprod.float()  # (train_steps,)
        self.block_map = block_index_map(model_cfg)  # (H, W)

    def sample_t(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """One independent timestep per (image, block): (B, T) long."""
        return torch.randint(0, self.cfg.train_steps, (batch, self.model_cfg.num_blocks), device=device,
                             generator=generator)

    def _per_pixel(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alphas_cumprod.to(t.device)[t]  # (B, T)
        ab = ab[:, self.block_map.to(t.device)].unsqueeze(1)  # (B, 1, H, W)
        return ab.sqrt(), (1 - ab).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, each block at its own t. x0, noise: (B, C, H, W)."""
        a, s = self._per_pixel(t)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.prediction == "epsilon":
            return noise
        a, s = self._per_pixel(t)
        return a * noise - s * x0

    def loss(self, model, x0: torch.Tensor, labels: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> Losses:
        """Sample t and noise, run the teacher-forced forward, return the losses."""
        t = self.sample_t(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        xt = self.add_noise(x0, noise, t)
        pred, hidden = model(x0, xt, t, labels)
        diffusion = F.mse_loss(pred.float(), self.target(x0, noise, t).float())
        hidden_loss = F.mse_loss(hidden.float(), x0.float()) if hidden is not None else diffusion.new_zeros(())
        return Losses(diffusion + self.cfg.hidden_loss_weight * hidden_loss, diffusion, hidden_loss)


def predicted_x0(scheduler, model_out: torch.Tensor, x_in: torch.Tensor, t) -> torch.Tensor:
    """x0 implied by a model output at timestep t, from the VP-space input x_in the model saw."""
    ab = scheduler.alphas_cumprod.to(x_in.device)[int(round(float(t)))].float()
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if scheduler.config.prediction_type == "epsilon":
        return (x_in - s * model_out) / a
    return a * x_in - s * model_out  # v-prediction
