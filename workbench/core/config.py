"""Configuration: frozen dataclasses, validation with actionable messages, YAML round-trip (presets: presets.py).

Symbols follow the paper: N = `model.depth`, D = `model.diffusion_depth`, T = `model.num_blocks`,
S = `sample.steps`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .configio import RenamedSetting, from_dict, migrate, read_yaml, renamed_message
from .configio import check as _check
from .sample_config import SAMPLERS, SAMPLERS_FOR, X0_CLIPS, SampleConfig, check_sampler, objective_family, samplers_for

TIMESTEP_CONDITIONING = ("embed", "adaln")
ATTENTIONS = ("sdpa", "flex")  # model.attention: dense-mask SDPA (the reference) or FlexAttention block masks
PREDICTIONS = ("epsilon", "v_prediction", "flow")  # the first two: VP diffusion (DDPM); "flow": rectified flow
LOSS_WEIGHTINGS = ("none", "min_snr")
# old spellings that still read, with a one-line warning naming the new one (configio.migrate); stored configs
# (checkpoint headers, reports) are carried over quietly
MOVED = {
    "diffusion.flow_shift": "sample.flow_shift",  # a sampling setting
    "diffusion.context_noise": "diffusion.train_context_noise",  # training's augmentation, apart from sampling's
}


@dataclass(frozen=True)
class ModelConfig:
    latent_size: int = 32  # side of the (square) latent grid the model sees, in latent pixels
    latent_channels: int = 1  # channels of the latent grid (1 for grey pixels, 3 RGB, 4 SD-VAE)
    patch_size: int = 4  # latent pixels per token side; a token holds C*p*p values
    num_blocks: int = 4  # T: square blocks the token grid is cut into (1, 4, 16, 64 ...)
    depth: int = 6  # N: transformer layers in total
    diffusion_depth: int = 3  # D: the last D layers form the diffusion stage (D=N: all diffusion)
    width: int = 256  # hidden size of every token
    heads: int = 4  # attention heads; width/heads must be a multiple of 4 (2-D RoPE)
    mlp_ratio: float = 8 / 3  # SwiGLU hidden size = mlp_ratio * width (rounded up to a multiple of 8)
    towers: str = "separate"  # "separate": clean and noisy streams own their parameters; "shared": one set
    use_z_cond: bool = True  # ablation "clean blocks only" when False: the AR output is not added
    clean_stream: bool = True  # ablation "z_cond only" when False: no clean copy of earlier blocks
    denoiser_attention: str = "context"  # diffusion layers see: "context" (clean blocks + own block),
    #                                      "block" (own block only, "MLP denoising"), "token" (each token alone)
    num_classes: int = 0  # 0: unconditional; >0 adds a class prefix token every image token sees
    label_dropout: float = 0.1  # training probability of replacing the label by the null class (enables CFG)
    qk_norm: bool = True  # RMSNorm on queries and keys (stabilises bf16 training)
    rope_base: float = 100.0  # RoPE base frequency; the grid is small, so a small base suffices
    timestep_conditioning: str = "embed"  # "embed" (paper): t enters only through the block embedder and output
    #                                      head; "adaln": also DiT's adaLN-Zero (shift, scale, gate) in every layer
    elastic_depths: tuple = ()  # elastic depth: the D values training draws per sample (e.g. [1, 2, 3, 4]), so
    #                                one checkpoint samples at any of them; () = a dedicated model of D only
    boundary_embedding: bool = True  # elastic: a learned embedding of D added with the noisy input at layer N-D
    norm_eps: float = 1e-6  # RMSNorm epsilon
    attention: str = "sdpa"  # "sdpa": dense boolean masks (the reference); "flex": FlexAttention with block-sparse
    #                           masks (compiled on GPUs; forward only on CPUs). Weights are the same under either

    def __post_init__(self) -> None:
        for name in ("latent_size", "latent_channels", "patch_size", "num_blocks", "depth", "width", "heads"):
            _check(
                int(getattr(self, name)) == getattr(self, name) and getattr(self, name) >= 1,
                f"model.{name}",
                f"must be a positive integer, got {getattr(self, name)!r}",
                "use an integer >= 1",
            )
        _check(
            0 <= self.diffusion_depth <= self.depth,
            "model.diffusion_depth",
            f"D={self.diffusion_depth} must lie in [0, N={self.depth}]",
            "choose 0 <= D <= model.depth",
        )
        _check(
            self.diffusion_depth >= 1,
            "model.diffusion_depth",
            "D=0 leaves no layer to denoise",
            "use D >= 1 (D = N is a plain diffusion transformer)",
        )
        _check(
            self.latent_size % self.patch_size == 0,
            "model.patch_size",
            f"{self.patch_size} does not divide latent_size={self.latent_size}",
            "pick a patch size that divides the latent grid",
        )
        g = math.isqrt(self.num_blocks)
        _check(
            g * g == self.num_blocks,
            "model.num_blocks",
            f"T={self.num_blocks} is not a square number, so the grid cannot be cut into square blocks",
            "use T in {1, 4, 16, 64, ...}",
        )
        _check(
            self.grid % g == 0,
            "model.num_blocks",
            f"a {g}x{g} block grid does not divide the {self.grid}x{self.grid} token grid",
            "choose T so that sqrt(T) divides latent_size/patch_size",
        )
        _check(
            self.width % self.heads == 0,
            "model.heads",
            f"{self.heads} heads do not divide width={self.width}",
            "choose heads so that width % heads == 0",
        )
        _check(
            (self.width // self.heads) % 4 == 0,
            "model.heads",
            f"head size {self.width // self.heads} is not a multiple of 4, which axial 2-D RoPE needs",
            "choose width/heads divisible by 4",
        )
        _check(
            self.towers in ("separate", "shared"),
            "model.towers",
            f"unknown value {self.towers!r}",
            "use 'separate' or 'shared'",
        )
        _check(
            self.denoiser_attention in ("context", "block", "token"),
            "model.denoiser_attention",
            f"unknown value {self.denoiser_attention!r}",
            "use 'context', 'block' or 'token'",
        )
        _check(0 < self.mlp_ratio < 64, "model.mlp_ratio", f"must lie in (0, 64), got {self.mlp_ratio}", "use e.g. 8/3")
        _check(0 < self.norm_eps < 1, "model.norm_eps", f"must lie in (0, 1), got {self.norm_eps}", "use e.g. 1e-6")
        _check(
            self.num_classes >= 0,
            "model.num_classes",
            f"must be >= 0, got {self.num_classes}",
            "use 0 for unconditional models",
        )
        _check(
            0.0 <= self.label_dropout < 1.0,
            "model.label_dropout",
            f"must lie in [0, 1), got {self.label_dropout}",
            "use e.g. 0.1",
        )
        _check(
            self.clean_stream or self.use_z_cond,
            "model.use_z_cond",
            "with clean_stream=False and use_z_cond=False the denoiser sees no context at all",
            "keep at least one of clean_stream / use_z_cond",
        )
        _check(self.rope_base > 1, "model.rope_base", f"must be > 1, got {self.rope_base}", "use e.g. 100")
        ds = self.elastic_depths
        _check(
            not ds or (list(ds) == sorted(set(ds)) and 1 <= ds[0] and ds[-1] <= self.depth),
            "model.elastic_depths",
            f"{list(ds)} must be increasing, distinct depths in [1, N={self.depth}]",
            "write e.g. [1, 2, 3, 4]",
        )
        _check(
            not ds or self.diffusion_depth in ds,
            "model.elastic_depths",
            f"the default D={self.diffusion_depth} is not one of {list(ds)}",
            "include model.diffusion_depth",
        )
        _check(
            not ds or self.movable_boundary,
            "model.elastic_depths",
            "elastic depth moves the boundary of the default architecture only",
            "use denoiser_attention='context', clean_stream=true and use_z_cond=true",
        )
        _check(
            self.attention in ATTENTIONS,
            "model.attention",
            f"unknown backend {self.attention!r}",
            "use 'sdpa' (dense masks, the reference) or 'flex' (FlexAttention block masks)",
        )
        _check(
            self.timestep_conditioning in TIMESTEP_CONDITIONING,
            "model.timestep_conditioning",
            f"unknown value {self.timestep_conditioning!r}",
            "use 'embed' (paper) or 'adaln' (DiT's adaLN-Zero)",
        )

    @property
    def movable_boundary(self) -> bool:
        """Whether the AR/diffusion boundary can move after training: the default architecture, whose AR and
        diffusion layers see the same tokens (context attention, a clean stream, z_cond)."""
        return self.denoiser_attention == "context" and self.clean_stream and self.use_z_cond

    @property
    def depths(self) -> tuple[int, ...]:
        """The diffusion depths D this model was trained at."""
        return tuple(self.elastic_depths) or (self.diffusion_depth,)

    @property
    def grid(self) -> int:
        """Tokens per side of the token grid."""
        return self.latent_size // self.patch_size

    @property
    def block_grid(self) -> int:
        """Blocks per side (sqrt(T))."""
        return math.isqrt(self.num_blocks)

    @property
    def block_side(self) -> int:
        """Tokens per side of one block."""
        return self.grid // self.block_grid

    @property
    def block_tokens(self) -> int:
        """B in the paper's cost: tokens per block."""
        return self.block_side**2

    @property
    def token_dim(self) -> int:
        """Values per token: C * p * p."""
        return self.latent_channels * self.patch_size**2

    @property
    def ar_depth(self) -> int:
        """N - D: layers of the autoregressive stage."""
        return self.depth - self.diffusion_depth

    @property
    def prefix_tokens(self) -> int:
        return 1 if self.num_classes > 0 else 0


@dataclass(frozen=True)
class DiffusionConfig:
    train_steps: int = 1000  # DDPM steps of the training process
    beta_start: float = 1e-4  # first beta of the linear schedule (DDPM)
    beta_end: float = 0.02  # last beta of the linear schedule
    beta_schedule: str = "linear"  # "linear" (paper) or "squaredcos_cap_v2" (cosine)
    prediction: str = "epsilon"  # network target: "epsilon" (paper), "v_prediction", or "flow" (rectified flow:
    #                                x_t = (1 - s) x0 + s eps with s = t/train_steps, velocity target eps - x0)
    hidden_loss_weight: float = 0.1  # weight of the loss decoding z_cond toward the clean block (0 disables)
    loss_weighting: str = "none"  # "none" (paper) or "min_snr": min(SNR, gamma)/SNR for epsilon, /(SNR+1) for v
    min_snr_gamma: float = 5.0  # gamma of min-SNR weighting (Hang et al. 2023)
    logit_mean: float = 0.0  # flow: training s = sigmoid(u), u ~ N(logit_mean, logit_std) (SD3)
    logit_std: float = 1.0  # flow: 0 draws s uniformly instead
    train_context_noise: float = 0.0  # training only: earlier blocks seen as context become (1 - c) x0 + c eps,
    #                                c drawn per image in [0, this] (0 = clean, the paper); was diffusion.context_noise.
    #                                Sampling's own (a fixed c, default 0) is sample.context_noise

    def __post_init__(self) -> None:
        _check(self.train_steps >= 2, "diffusion.train_steps", f"got {self.train_steps}", "use e.g. 1000")
        _check(
            0 < self.beta_start < self.beta_end < 1,
            "diffusion.beta_start",
            f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}",
            "use 1e-4 and 0.02",
        )
        _check(
            self.beta_schedule in ("linear", "squaredcos_cap_v2"),
            "diffusion.beta_schedule",
            f"unknown schedule {self.beta_schedule!r}",
            "use 'linear' or 'squaredcos_cap_v2'",
        )
        _check(
            self.prediction in PREDICTIONS,
            "diffusion.prediction",
            f"unknown target {self.prediction!r}",
            "use 'epsilon' (paper), 'v_prediction' or 'flow'",
        )
        _check(
            self.loss_weighting in LOSS_WEIGHTINGS,
            "diffusion.loss_weighting",
            f"unknown weighting {self.loss_weighting!r}",
            "use 'none' or 'min_snr'",
        )
        _check(
            self.loss_weighting == "none" or self.prediction != "flow",
            "diffusion.loss_weighting",
            f"{self.loss_weighting!r} weights the VP objectives by their SNR; flow matching has no such weighting "
            "(its logit-normal timesteps play that role)",
            "use loss_weighting='none' with prediction='flow', or prediction 'epsilon'/'v_prediction'",
        )
        _check(
            0 < self.min_snr_gamma < math.inf,
            "diffusion.min_snr_gamma",
            f"got {self.min_snr_gamma}",
            "use a positive gamma (5 in the paper of min-SNR)",
        )
        _check(
            math.isfinite(self.logit_mean) and 0 <= self.logit_std < 10,
            "diffusion.logit_std",
            f"need a finite logit_mean and 0 <= logit_std < 10, got {self.logit_mean}, {self.logit_std}",
            "use logit_mean 0 and logit_std 1 (SD3)",
        )
        _check(
            0 <= self.train_context_noise < 1,
            "diffusion.train_context_noise",
            f"got {self.train_context_noise}",
            "use 0 to 0.5",
        )
        _check(
            self.hidden_loss_weight >= 0,
            "diffusion.hidden_loss_weight",
            f"got {self.hidden_loss_weight}",
            "use a weight >= 0 (0.1 in the paper)",
        )


DATASETS = ("fashion-mnist", "emoji", "fluent", "fluent-people", "folder")
STRATEGIES = ("auto", "ddp", "fsdp")
CODECS = ("pixel", "vae")
LABEL_SCHEMES = ("group", "tone", "group-tone")  # data.labels: the Fluent sets' class labels (emoji.FLUENT_LABELS)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"  # "fashion-mnist" (offline default), "emoji" (Noto colour, 64x64+), "fluent"
    #                                (Fluent 3D emoji, 256x256 RGBA), "fluent-people" (its people and smileys), "folder"
    root: str = ""  # dataset location; empty = the dataset's default search path
    image_size: int = 32  # side of the square images fed to the codec
    channels: int = 1  # image channels (1 grey, 3 RGB)
    codec: str = "pixel"  # "pixel": the model works on pixels; "vae": on latents of a diffusers autoencoder
    vae_path: str = ""  # local folder of a diffusers AutoencoderKL / AutoencoderTiny (e.g. data/codecs/...)
    latent_scale: float = 1.0  # latents are multiplied by this (0.18215 for SD-VAE); 0 = the folder's own
    #                                config scaling_factor (the codecs trained here measure theirs)
    random_flip: bool = True  # horizontal flips as augmentation
    on_corrupt: str = "error"  # unreadable images: "error" stops with the file name; "skip" counts them
    num_workers: int = 0  # DataLoader worker processes
    max_images: int = 0  # train (and validate) on an evenly spaced subset of this many images; 0 = all
    labels: str = "group"  # Fluent sets' class labels: "group" (Unicode), "tone" (skin) or "group-tone"
    cache_dir: str = ""  # latent caches and folder indexes; "" = $WORKBENCH_CACHE, else data/cache (small sets)
    #                                or ~/.cache/madformer-workbench (100k+ images), outside the work tree

    def __post_init__(self) -> None:
        _check(
            self.dataset in DATASETS,
            "data.dataset",
            f"unknown dataset {self.dataset!r}",
            f"use one of {', '.join(DATASETS)}",
        )
        _check(self.codec in CODECS, "data.codec", f"unknown codec {self.codec!r}", f"use one of {', '.join(CODECS)}")
        _check(self.image_size >= 8, "data.image_size", f"got {self.image_size}", "use a size >= 8")
        _check(self.channels in (1, 3), "data.channels", f"got {self.channels}", "use 1 (grey) or 3 (RGB)")
        _check(
            self.codec != "vae" or bool(self.vae_path),
            "data.vae_path",
            "codec='vae' needs a local VAE folder",
            "set data.vae_path to a diffusers AutoencoderKL folder (e.g. sd-vae-ft-mse)",
        )
        _check(
            self.on_corrupt in ("error", "skip"), "data.on_corrupt", f"got {self.on_corrupt!r}", "use 'error' or 'skip'"
        )
        _check(
            self.latent_scale >= 0,
            "data.latent_scale",
            f"got {self.latent_scale}",
            "use a positive factor, or 0 for the codec's own scaling_factor",
        )
        _check(self.num_workers >= 0, "data.num_workers", f"got {self.num_workers}", "use 0 or more")
        _check(self.max_images >= 0, "data.max_images", f"got {self.max_images}", "use 0 (all images) or a count")
        _check(
            self.labels in LABEL_SCHEMES and (self.labels == "group" or self.dataset.startswith("fluent")),
            "data.labels",
            f"{self.labels!r} is not a label scheme of dataset {self.dataset!r} (unknown label "
            "scheme, or one of the Fluent sets only)",
            f"use one of {', '.join(LABEL_SCHEMES)} on fluent data, else 'group' (the dataset's own labels)",
        )

    @property
    def downsample(self) -> int:
        """Pixels per latent pixel of the codec."""
        return 8 if self.codec == "vae" else 1


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64  # images per optimizer step per process (before accumulation)
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    lr: float = 3e-4  # peak learning rate (AdamW)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    weight_decay: float = 0.05  # AdamW decoupled weight decay (matrices only)
    warmup_frac: float = 0.01  # warmup-stable-decay: fraction of steps with linear warmup
    decay_start_frac: float = 0.85  # fraction of steps after which the LR decays
    final_lr_frac: float = 1 / 64  # LR at the end, as a fraction of the peak
    grad_clip: float = 1.0  # max global gradient norm (0 disables)
    ema_decay: float = 0.9999  # EMA of the weights used for sampling (0 disables)
    max_steps: int = 10_000  # optimizer steps of the run (the LR schedule spans these)
    max_minutes: float = 0.0  # wall-clock budget; 0 = no limit (the run stops early, checkpointed)
    precision: str = "32-true"  # Fabric precision: "32-true", "bf16-mixed", "16-mixed", "bf16-true"
    accelerator: str = "auto"  # Fabric accelerator: "auto", "cpu", "cuda", "mps"
    devices: Any = 1  # processes/devices per node (int, list or "auto")
    num_nodes: int = 1  # nodes
    strategy: str = "auto"  # Fabric strategy: "auto", "ddp", "fsdp" (FSDP2 fully_shard per decoder layer)
    seed: int = 0  # seed of weights, data order and noise
    out_dir: str = "runs/default"  # checkpoints, logs and sample grids go here
    log_every: int = 10  # steps between log lines
    ckpt_every: int = 500  # steps between checkpoints
    keep_last: int = 3  # checkpoints kept (older ones are deleted)
    sample_every: int = 1000  # steps between sample grids (0 disables)
    eval_every: int = 0  # steps between validation/FID (0 = only at the end)
    fid_samples: int = 0  # images of the EMA model scored at each eval_every (0 = validation loss only)
    fid_extractor: str = ""  # FID features during training: "inception", "fmnist-classifier" ("" = the data's default)
    fid_sampler: str = ""  # sampler of the FID images ("" = sample.sampler)
    fid_steps: int = 0  # S per block of the FID images (0 = sample.steps)
    val_batches: int = 8  # batches of the validation split used for the validation loss
    compile: bool = False  # torch.compile the model
    activation_checkpointing: bool = False  # recompute each decoder layer in the backward (less activation memory)
    tf32: bool = True  # CUDA: TF32 tensor cores for fp32 matmuls and convolutions while training (no effect on CPUs)
    #                                (10-bit mantissa, several times faster on Ampere and later; sampling: sample.tf32)

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "grad_accum",
            "max_steps",
            "log_every",
            "ckpt_every",
            "keep_last",
            "num_nodes",
            "val_batches",
        ):
            _check(
                getattr(self, name) >= 1,
                f"train.{name}",
                f"must be >= 1, got {getattr(self, name)}",
                "use a positive integer",
            )
        _check(0 < self.lr < math.inf, "train.lr", f"got {self.lr}", "use a finite positive learning rate")
        _check(
            0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
            "train.beta1",
            "AdamW betas must lie in [0, 1)",
            "use 0.9 and 0.95",
        )
        _check(
            0 <= self.warmup_frac <= self.decay_start_frac <= 1,
            "train.warmup_frac",
            "need 0 <= warmup_frac <= decay_start_frac <= 1",
            "use 0.01 and 0.85",
        )
        _check(0 < self.final_lr_frac <= 1, "train.final_lr_frac", f"got {self.final_lr_frac}", "use e.g. 1/64")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", f"got {self.ema_decay}", "use e.g. 0.9999, or 0 to disable")
        _check(self.grad_clip >= 0, "train.grad_clip", f"got {self.grad_clip}", "use 1.0, or 0 to disable")
        _check(self.max_minutes >= 0, "train.max_minutes", f"got {self.max_minutes}", "use 0 for no limit")
        _check(
            self.strategy in STRATEGIES,
            "train.strategy",
            f"got {self.strategy!r}",
            "use 'auto' (one process), 'ddp' (several processes, GPUs or nodes) or 'fsdp' (sharded weights and "
            "optimizer state)",
        )
        _check(
            self.sample_every >= 0 and self.eval_every >= 0, "train.sample_every", "must be >= 0", "use 0 to disable"
        )
        _check(
            self.fid_samples == 0 or self.fid_samples >= 10,
            "train.fid_samples",
            f"got {self.fid_samples}",
            "use 0 (no FID) or at least 10 images (1,000 or more for figures you report)",
        )
        _check(
            self.fid_extractor in ("", "inception", "fmnist-classifier"),
            "train.fid_extractor",
            f"got {self.fid_extractor!r}",
            "use 'inception', 'fmnist-classifier' or '' (the data's default)",
        )
        _check(
            self.fid_sampler in ("", *SAMPLERS),
            "train.fid_sampler",
            f"got {self.fid_sampler!r}",
            f"use one of {', '.join(SAMPLERS)} or '' (sample.sampler)",
        )
        _check(self.fid_steps >= 0, "train.fid_steps", f"got {self.fid_steps}", "use 0 (sample.steps) or S >= 1")
        _check(isinstance(self.tf32, bool), "train.tf32", f"got {self.tf32!r}", "use true or false")


@dataclass(frozen=True)
class Config:
    name: str = "custom"  # preset or experiment name (recorded in checkpoints and reports)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        expect = self.data.image_size // self.data.downsample
        _check(
            self.data.image_size % self.data.downsample == 0 and self.model.latent_size == expect,
            "model.latent_size",
            f"{self.model.latent_size} does not match data.image_size={self.data.image_size} "
            f"through the {self.data.codec!r} codec (x1/{self.data.downsample})",
            f"set model.latent_size={expect} or change data.image_size",
        )
        want_c = self.data.channels if self.data.codec == "pixel" else self.model.latent_channels
        _check(
            self.model.latent_channels == want_c,
            "model.latent_channels",
            f"{self.model.latent_channels} does not match data.channels={self.data.channels} for the pixel codec",
            f"set model.latent_channels={want_c}",
        )
        n = len(self.sample.class_counts)
        _check(
            n in (0, self.model.num_classes),
            "sample.class_counts",
            f"{n} counts for a model of model.num_classes={self.model.num_classes} classes",
            "give one count per class (or none)",
        )
        self.sample.check_objective(self.diffusion.prediction)

    # ---- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain types only (tuples become lists), for YAML, JSON and checkpoint headers."""
        return dataclasses.asdict(
            self, dict_factory=lambda kv: {k: list(v) if isinstance(v, tuple) else v for k, v in kv}
        )

    @classmethod
    def from_dict(cls, d: dict, warn_moved: bool = False) -> Config:
        """A config from a mapping; old spellings (MOVED) are carried to their new homes, with a warning when
        `warn_moved` (what a user writes: YAML, --set), quietly for stored configs (checkpoint headers)."""
        return from_dict(cls, migrate(d, MOVED, warn_moved), "", _SUBCONFIGS)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> Config:
        """A config from YAML text or a YAML file (a Path, or one line ending in .yaml/.yml)."""
        return cls.from_dict(read_yaml(text_or_path), warn_moved=True)

    def override(self, **dotted: Any) -> Config:
        """Return a copy with dotted fields replaced, e.g. override(**{"model.depth": 8})."""
        d = self.to_dict()
        for key, value in dotted.items():
            if key in MOVED:  # an old spelling: said once, then read at its new home
                warnings.warn(renamed_message(key, MOVED[key]), RenamedSetting, stacklevel=2)
                key = MOVED[key]
            node, parts = d, key.split(".")
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], dict):
                    raise ValueError(f"{key}: no config section {p!r}. Fix: use one of {sorted(_sections())}.")
                node = node[p]
            if parts[-1] not in node:
                raise ValueError(f"{key}: unknown field {parts[-1]!r}. Fix: use one of {sorted(node)}.")
            node[parts[-1]] = value
        return Config.from_dict(d)


def _sections() -> list[str]:
    return [f.name for f in fields(Config) if f.name != "name"]


_SUBCONFIGS = {
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
}


__all__ = [
    "ModelConfig",
    "DiffusionConfig",
    "DataConfig",
    "TrainConfig",
    "SampleConfig",
    "Config",
    "SAMPLERS",
    "X0_CLIPS",
    "SAMPLERS_FOR",
    "samplers_for",
    "check_sampler",
    "objective_family",
    "replace",
    "MOVED",
]
