"""Rectified flow (flow matching) as a training objective: the transport beside diffusion.py's VP process.

With s in (0, 1) the noise level of a block, x_s = (1 - s) x0 + s eps, and the network regresses the velocity
v = eps - x0 (so dx/ds = v and x0 = x_s - s v). Training draws s logit-normally, s = sigmoid(u), u ~ N(m, std)
(SD3, Esser et al. 2024); std 0 draws s uniformly. The model sees t = s * train_steps, so t = 0 still means a
clean block and the AR context is the same as under the VP objectives. Sampling uses diffusers' flow schedulers:
FlowMatchEulerDiscreteScheduler ("euler") and DPM-Solver++ 2M with flow sigmas ("dpm++2m").
"""

from __future__ import annotations

import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from .config import DiffusionConfig, ModelConfig, check_sampler
from .diffusion import Objective


class Flow(Objective):
    family = "flow"

    def __init__(self, cfg: DiffusionConfig, model_cfg: ModelConfig):
        super().__init__(cfg, model_cfg)
        self.scale = float(cfg.train_steps)  # model timestep per unit of s

    def sample_t(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T) float model timesteps t = s * train_steps with s logit-normal (or uniform) in (0, 1)."""
        shape = (batch, self.model_cfg.num_blocks)
        if self.cfg.logit_std > 0:
            u = torch.randn(shape, device=device, generator=generator)
            s = torch.sigmoid(self.cfg.logit_mean + self.cfg.logit_std * u)
        else:
            s = torch.rand(shape, device=device, generator=generator)
        return s * self.scale

    def _s(self, t: torch.Tensor) -> torch.Tensor:
        return self.per_pixel(t.float() / self.scale)  # (B, 1, H, W)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self._s(t).to(x0.dtype)
        return (1 - s) * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise - x0

    def make_scheduler(self, name: str, steps: int, x0_clip: str = "none", shift: float = 1.0):
        check_sampler(self.cfg.prediction, name, x0_clip)
        if name == "euler":
            s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.cfg.train_steps, shift=shift)
        else:  # dpm++2m
            s = DPMSolverMultistepScheduler(
                num_train_timesteps=self.cfg.train_steps,
                use_flow_sigmas=True,
                prediction_type="flow_prediction",
                flow_shift=shift,
                algorithm_type="dpmsolver++",
                solver_order=2,
                lower_order_final=True,
                thresholding=x0_clip == "dynamic",
                sample_max_value=1.0,
            )
        s.set_timesteps(steps)
        return s

    def predicted_x0(self, model_out: torch.Tensor, x_in: torch.Tensor, t) -> torch.Tensor:
        return x_in - (float(t) / self.scale) * model_out
