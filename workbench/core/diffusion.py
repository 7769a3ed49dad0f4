"""The training objective interface, and the VP (DDPM) objective: noising with one timestep per image and block.

An `Objective` draws the timesteps, noises x0, names the regression target and its weight, computes the loss and
builds the diffusers schedulers that fit it. The model never knows which objective trains it: it sees noisy
latents and a timestep t in [0, train_steps) per block, with t = 0 meaning clean. flow.py holds the other
objective (rectified flow), as SiT's `transport/` sits beside `diffusion/`; objectives.py picks one from the config.

| code           | paper                                   |
|----------------|-----------------------------------------|
| alphas_cumprod | alpha-bar_t                             |
| t (B, T)       | one timestep per (image, block)         |
| epsilon        | eps-prediction target (default)         |
| v_prediction   | v = alpha_t * eps - sigma_t * x0        |
| min_snr        | w(t) = min(SNR_t, gamma) / SNR_t (eps), / (SNR_t + 1) (v)  (Hang et al. 2023) |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from .blocks import block_index_map
from .config import DiffusionConfig, ModelConfig, check_sampler
from .model import sample_depths


@dataclass
class Losses:
    total: torch.Tensor  # diffusion + hidden_loss_weight * hidden
    diffusion: torch.Tensor  # (weighted) MSE to the objective's target
    hidden: torch.Tensor  # MSE of the z_cond decoder to the clean block (0 when the model has none)


class Objective:
    """What trains the denoiser: timesteps, noising, target, weight, loss; and the samplers that fit."""

    family = ""  # "vp" or "flow" (config.SAMPLERS_FOR)

    def __init__(self, cfg: DiffusionConfig, model_cfg: ModelConfig):
        self.cfg = cfg
        self.model_cfg = model_cfg
        self.block_map = block_index_map(model_cfg)  # (H, W): the block of every latent pixel

    # ---- to be provided by an objective --------------------------------------------------------------------------
    def sample_t(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training timesteps, one per (image, block): (B, T)."""
        raise NotImplementedError

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """Loss weight per (image, block) (B, T), or None for the plain mean."""
        return None

    def make_scheduler(self, name: str, steps: int, x0_clip: str = "none", shift: float = 1.0):
        """The diffusers scheduler `name` set to `steps` steps; `shift` is a flow model's time shift
        (sample.flow_shift), which the VP objectives do not take."""
        raise NotImplementedError

    def predicted_x0(self, model_out: torch.Tensor, x_in: torch.Tensor, t) -> torch.Tensor:
        """x0 implied by a model output at (scalar) timestep t from the input x_in the model saw."""
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------------------------
    @staticmethod
    def scale_input(scheduler, x: torch.Tensor, t) -> torch.Tensor:
        """The scheduler's input scaling where it has one (VP Euler), else x."""
        scale = getattr(scheduler, "scale_model_input", None)
        return scale(x, t) if scale is not None else x

    @staticmethod
    def init_sigma(scheduler) -> float:
        return float(getattr(scheduler, "init_noise_sigma", 1.0))

    def per_pixel(self, values: torch.Tensor) -> torch.Tensor:
        """(B, T) per-block values -> (B, 1, H, W) maps over the latent grid."""
        return values[:, self.block_map.to(values.device)].unsqueeze(1)

    def noisy_context(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The clean latents the teacher-forced pass takes as context, augmented by diffusion.train_context_noise:
        each image mixed with fresh noise as (1 - c) x0 + c eps, c uniform in [0, train_context_noise] (x0 itself,
        drawing nothing, when it is 0 or there is one block). Only earlier blocks are read from it (the model is
        causal), so the noisy block's target is untouched; the cure for a model that recognises a training image
        from its clean context (benchmarks/bench_generalization.py) and then meets its own, novel, blocks at sampling
        time."""
        if self.cfg.train_context_noise == 0 or self.model_cfg.num_blocks == 1:
            return x0
        c = torch.rand(x0.shape[0], 1, 1, 1, device=x0.device, generator=generator) * self.cfg.train_context_noise
        eps = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        return ((1 - c) * x0 + c * eps).to(x0.dtype)

    def loss(
        self, model, x0: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> Losses:
        """Sample t and noise, run the teacher-forced forward, return the losses."""
        t = self.sample_t(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        xt = self.add_noise(x0, noise, t)
        context = self.noisy_context(x0, generator)  # what the model sees of the earlier blocks
        if self.model_cfg.elastic_depths:  # elastic depth: each sample's AR/diffusion boundary
            depth = sample_depths(self.model_cfg, x0.shape[0], x0.device, generator)
            pred, hidden = model(context, xt, t, labels, depth)
        else:
            pred, hidden = model(context, xt, t, labels)
        w = self.weight(t)
        if w is None:
            diffusion = F.mse_loss(pred.float(), self.target(x0, noise, t).float())
        else:
            err = (pred.float() - self.target(x0, noise, t).float()) ** 2
            diffusion = (self.per_pixel(w.float()) * err).mean()
        hidden_loss = F.mse_loss(hidden.float(), x0.float()) if hidden is not None else diffusion.new_zeros(())
        return Losses(diffusion + self.cfg.hidden_loss_weight * hidden_loss, diffusion, hidden_loss)


# ---- the VP objective ----------------------------------------------------------------------------------------------
def _schedule_kwargs(cfg: DiffusionConfig) -> dict:
    return dict(
        num_train_timesteps=cfg.train_steps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction,
    )


DYNAMIC_MAX = 1.5  # the largest percentile s dynamic thresholding divides by


def make_scheduler(name: str, cfg: DiffusionConfig, steps: int, x0_clip: str = "none"):
    """A fresh diffusers scheduler for the VP objective by name ("ddpm", "ddim", "dpm++2m", "euler") with `steps`
    set; x0_clip "clip" or "dynamic" turns on the scheduler's own x0 clipping or dynamic thresholding."""
    check_sampler(cfg.prediction, name, x0_clip)
    kw = _schedule_kwargs(cfg)
    # dynamic thresholding (Imagen): s = the 99.5th percentile of |x0| per image, clamped to [1, sample_max_value],
    # then x0 -> clamp(x0, -s, s) / s. With sample_max_value = 1 that is plain clipping; DeepFloyd IF uses 1.5
    clip = dict(
        clip_sample=x0_clip == "clip",
        thresholding=x0_clip == "dynamic",
        sample_max_value=DYNAMIC_MAX if x0_clip == "dynamic" else 1.0,
    )
    if name == "ddpm":
        s = DDPMScheduler(**kw, **clip)
    elif name == "ddim":
        s = DDIMScheduler(**kw, **clip, set_alpha_to_one=False, timestep_spacing="trailing")
    elif name == "dpm++2m":
        s = DPMSolverMultistepScheduler(
            **kw,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            lower_order_final=True,
            thresholding=x0_clip == "dynamic",
            sample_max_value=DYNAMIC_MAX,
        )
    else:  # euler (check_sampler refused anything else)
        s = EulerDiscreteScheduler(**kw, timestep_spacing="trailing")
    s.set_timesteps(steps)
    return s


class Diffusion(Objective):
    """Training-time DDPM process (epsilon or v target): noising per (image, block), targets, min-SNR weights."""

    family = "vp"

    def __init__(self, cfg: DiffusionConfig, model_cfg: ModelConfig):
        super().__init__(cfg, model_cfg)
        self.train_scheduler = DDPMScheduler(**_schedule_kwargs(cfg))
        self.alphas_cumprod = self.train_scheduler.alphas_cumprod.float()  # (train_steps,)
        ab = self.alphas_cumprod.double()
        self._sigmas = ((1 - ab) / ab).sqrt().numpy()  # Euler's sigma at every integer timestep

    def sample_t(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """One independent timestep per (image, block): (B, T) long."""
        return torch.randint(
            0, self.cfg.train_steps, (batch, self.model_cfg.num_blocks), device=device, generator=generator
        )

    def _per_pixel(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.per_pixel(self.alphas_cumprod.to(t.device)[t])  # (B, 1, H, W)
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

    def weight(self, t: torch.Tensor) -> torch.Tensor | None:
        if self.cfg.loss_weighting == "none":
            return None
        ab = self.alphas_cumprod.to(t.device)[t]
        snr = ab / (1 - ab)
        clipped = snr.clamp(max=self.cfg.min_snr_gamma)
        return clipped / snr if self.cfg.prediction == "epsilon" else clipped / (snr + 1)

    def make_scheduler(self, name: str, steps: int, x0_clip: str = "none", shift: float = 1.0):
        return make_scheduler(name, self.cfg, steps, x0_clip)  # shift: refused for VP by SampleConfig.check_objective

    def alpha_bar(self, t) -> torch.Tensor:
        """alpha-bar (float32 scalar) at a possibly fractional timestep (Euler's), interpolated in sigma as
        diffusers interpolates its sigmas."""
        t = float(t)
        if t == int(t):
            return self.alphas_cumprod[int(t)]
        sigma = float(np.interp(t, np.arange(len(self._sigmas)), self._sigmas))
        return torch.tensor(1.0 / (1.0 + sigma**2), dtype=torch.float32)

    def predicted_x0(self, model_out: torch.Tensor, x_in: torch.Tensor, t) -> torch.Tensor:
        """x0 implied by a model output at timestep t, from the VP-space input x_in the model saw."""
        ab = self.alpha_bar(t).to(x_in.device)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        if self.cfg.prediction == "epsilon":
            return (x_in - s * model_out) / a
        return a * x_in - s * model_out  # v-prediction
