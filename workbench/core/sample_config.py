"""The sampling request: every setting of one sampling run in one frozen, validated object (`config.sample`).

A `SampleConfig` owns the sampler and its steps, the diffusion depth and its per-block and per-step schedules,
guidance, context noise, the flow time shift, x0 clipping, the cache, the seed and the images to draw, and the
numerics (precision, TF32). Field checks run when one is built; the checks against a model and its objective run
once per sampling call (`workbench.sampling.request`). Which samplers fit which objective lives here too.
"""

from __future__ import annotations

from dataclasses import dataclass

from .configio import check

# the diffusers schedulers that fit each objective (the sampler names of SampleConfig)
SAMPLERS_FOR = {"vp": ("ddpm", "ddim", "dpm++2m", "euler"), "flow": ("euler", "dpm++2m")}
SAMPLERS = ("ddpm", "ddim", "dpm++2m", "euler")
X0_CLIPS = ("none", "clip", "dynamic")
# the samplers whose diffusers scheduler offers each x0 treatment
CLIP_SAMPLERS = {"clip": ("ddpm", "ddim"), "dynamic": ("ddpm", "ddim", "dpm++2m")}
PRECISIONS = ("fp32", "bf16")  # sample.precision: the model's evaluations in fp32, or under bf16 autocast
NOISE_LAYOUTS = ("per-image", "batch")  # sample.noise_layout (see the field's comment)


def objective_family(prediction: str) -> str:
    """ "flow" for rectified flow, "vp" for the variance-preserving (DDPM) objectives."""
    return "flow" if prediction == "flow" else "vp"


def samplers_for(prediction: str, x0_clip: str = "none") -> tuple[str, ...]:
    """The sampler names that fit a prediction target (and, when set, offer the x0 treatment)."""
    names = SAMPLERS_FOR[objective_family(prediction)]
    if x0_clip != "none":
        names = tuple(n for n in names if n in CLIP_SAMPLERS[x0_clip])
    return names


def check_sampler(prediction: str, sampler: str, x0_clip: str = "none") -> None:
    """Refuse a sampler that does not fit the objective (or does not offer the x0 treatment), naming those that do."""
    fits = samplers_for(prediction)
    check(
        sampler in fits,
        "sample.sampler",
        f"{sampler!r} does not fit a model trained with prediction={prediction!r}",
        f"use one of {', '.join(fits)}",
    )
    if x0_clip != "none":
        offer = samplers_for(prediction, x0_clip)
        check(
            sampler in offer,
            "sample.x0_clip",
            f"the {sampler!r} scheduler offers no {x0_clip!r} treatment of x0 for prediction={prediction!r}",
            f"use x0_clip='none' or one of {', '.join(offer) or 'no sampler'}",
        )


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "ddim"  # "ddpm", "ddim", "dpm++2m" (DPM-Solver++ 2M) or "euler"; which of them fit is
    #                                set by diffusion.prediction (SAMPLERS_FOR: flow takes euler and dpm++2m)
    steps: int = 50  # S: denoising steps per block
    num_images: int = 16  # images per call
    seed: int = 0  # seed of the initial noise, stochastic samplers, context noise and drawn labels
    cfg_scale: float = 1.0  # classifier-free guidance scale (1 = none; class-conditional models only)
    class_counts: tuple = ()  # training images per class: unlabelled samples draw labels in proportion
    use_cache: bool = True  # KV-cached block-wise sampling (False recomputes the prefix every step)
    use_ema: bool = True  # sample from EMA weights when the checkpoint has them
    x0_clip: str = "none"  # the scheduler's treatment of predicted x0: "none", "clip" to [-1, 1] or
    #                                "dynamic" thresholding (Imagen); only where the diffusers scheduler offers it
    diffusion_depth: int = 0  # D to sample with (0: the model's own); an elastic model takes any D it trained
    depth_schedule: tuple = ()  # D_k for each block k (T values; overrides diffusion_depth); () = one D
    steps_schedule: tuple = ()  # S_k for each block k (T values; overrides steps); () = S for every block
    depth_per_step: tuple = ()  # D_i over the steps of every block, noisiest first: P <= S_k values spread evenly
    #                                (step i of S takes value floor(i*P/S)); overrides diffusion_depth; () = one D
    allow_untrained_depth: bool = False  # permit a D outside the model's trained set (reports label it)
    context_noise: float = 0.0  # sampling: later blocks read each finished block as (1 - c) x + c eps (0 = clean,
    #                                the paper); training's own augmentation is diffusion.train_context_noise
    flow_shift: float = 1.0  # flow models: sampling time shift s' = k s / (1 + (k - 1) s) (1 = none; SD3 uses 3);
    #                                was diffusion.flow_shift
    noise_layout: str = "per-image"  # "per-image": image i of a seed draws all its noise from its own CPU
    #                                generator, so it is the same at any batch size; "batch": one generator for the
    #                                whole batch (the layout before per-image seeds; reports without the field used it)
    first_image: int = 0  # per-image layout: the request's image j is image first_image + j of the seed
    precision: str = "fp32"  # the model's evaluations: "fp32", or "bf16" under autocast (the scheduler stays fp32)
    tf32: bool = True  # CUDA: TF32 tensor cores for fp32 matmuls and convolutions (no effect elsewhere)

    def __post_init__(self) -> None:
        check(
            self.sampler in SAMPLERS,
            "sample.sampler",
            f"unknown sampler {self.sampler!r}",
            f"use one of {', '.join(SAMPLERS)}",
        )
        check(
            self.x0_clip in X0_CLIPS,
            "sample.x0_clip",
            f"unknown value {self.x0_clip!r}",
            "use 'none', 'clip' or 'dynamic'",
        )
        check(1 <= self.steps <= 1000, "sample.steps", f"got {self.steps}", "use 1..1000 steps")
        check(self.num_images >= 1, "sample.num_images", f"got {self.num_images}", "use at least 1 image")
        check(self.cfg_scale >= 0, "sample.cfg_scale", f"got {self.cfg_scale}", "use 1 (none) or more")
        check(0 <= self.context_noise < 1, "sample.context_noise", f"got {self.context_noise}", "use 0 (clean) to 0.5")
        check(0 < self.flow_shift < 100, "sample.flow_shift", f"got {self.flow_shift}", "use 1 (none) to 3")
        check(
            self.noise_layout in NOISE_LAYOUTS,
            "sample.noise_layout",
            f"unknown layout {self.noise_layout!r}",
            "use 'per-image' (the default) or 'batch' (to reproduce runs from before per-image seeds)",
        )
        check(self.first_image >= 0, "sample.first_image", f"got {self.first_image}", "use an image index >= 0")
        check(
            self.first_image == 0 or self.noise_layout == "per-image",
            "sample.first_image",
            "an image offset needs the per-image noise layout",
            "use first_image=0 with noise_layout='batch'",
        )
        check(
            self.precision in PRECISIONS,
            "sample.precision",
            f"unknown precision {self.precision!r}",
            "use 'fp32' or 'bf16' (autocast)",
        )
        check(
            not self.class_counts or (min(self.class_counts) >= 0 and sum(self.class_counts) > 0),
            "sample.class_counts",
            f"got {list(self.class_counts)}",
            "give counts >= 0, one positive (or none)",
        )
        check(
            self.diffusion_depth >= 0 and all(d >= 1 for d in self.depth_schedule),
            "sample.diffusion_depth",
            "depths must be >= 1 (0 = the model's own)",
            "use a D of the model's trained set",
        )
        check(
            all(1 <= s <= 1000 for s in self.steps_schedule),
            "sample.steps_schedule",
            f"got {list(self.steps_schedule)}",
            "use 1..1000 steps per block",
        )
        check(
            all(d >= 1 for d in self.depth_per_step),
            "sample.depth_per_step",
            f"got {list(self.depth_per_step)}",
            "use depths D >= 1",
        )
        check(
            not (self.depth_schedule and self.depth_per_step),
            "sample.depth_per_step",
            "set together with sample.depth_schedule",
            "give one D per block or D values per step, not both",
        )

    def check_objective(self, prediction: str) -> None:
        """Refuse settings that do not fit the objective: the sampler (and its x0 treatment), and a flow shift on a
        model that is not a flow model."""
        check_sampler(prediction, self.sampler, self.x0_clip)
        check(
            self.flow_shift == 1.0 or objective_family(prediction) == "flow",
            "sample.flow_shift",
            f"{self.flow_shift:g} shifts a flow model's schedule, and this model's objective is {prediction!r}",
            "leave sample.flow_shift at 1",
        )


__all__ = [
    "SampleConfig",
    "SAMPLERS",
    "SAMPLERS_FOR",
    "X0_CLIPS",
    "PRECISIONS",
    "NOISE_LAYOUTS",
    "samplers_for",
    "check_sampler",
    "objective_family",
]
