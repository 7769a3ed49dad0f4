"""The zoo's definition: its families, their members (config overrides of each family's base, built into full
configs with each family's training budget by `members()`), the run folder each member trains in, and the plan of
each member's evaluation curve. The zoo's one driver, `python -m workbench zoo` (workbench.research.zoo), trains,
scores and exports them; reports, notebooks and the app read them."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Config
from ..core.paths import REPO_ROOT
from ..core.presets import preset
from ..evaluation.evaluate import EVAL_STEPS
from .replicates import seeded_name, split_seed

FAMILIES = (
    "vertical",
    "blocks-fmnist",
    "blocks-emoji",
    "blocks-emoji256",
    "blocks-people256",
    "context-people256",
    "ablations",
    "depth",
)
ABLATIONS = [
    ("default", {}),
    ("no-zcond", {"model.use_z_cond": False}),  # in the order of the paper's tables
    ("no-clean", {"model.clean_stream": False}),
    ("shared", {"model.towers": "shared"}),
    ("mlp-denoise", {"model.denoiser_attention": "block"}),
    ("hidden0", {"diffusion.hidden_loss_weight": 0.0}),
]
ABLATION_SEEDS = (0, 1, 2)  # training seeds: an ablation's effect is read against the spread between them
VERTICAL_D = (1, 2, 3, 4)  # N/4 .. N of the zoo's N=4
# the headline at depth: elastic models at more layers N, each trained at every D in 1..N, opening at D = N/4, with
# the training compute of one dedicated vertical model (steps x layers = 3,000 x 4: N=8 1,500 steps, N=12 1,000;
# about 22 minutes per run on 2 cores); two seeds at each N; bf16 autocast like the vertical
# family (on a CPU without AVX-512 BF16 it runs ~13x slower than fp32: train.precision 32-true there)
DEPTH_NS = (8, 12)
DEPTH_SEEDS = {8: (0, 1), 12: (0, 1)}
# scoring every D of N=12 over the whole S grid costs 5x the training on 2 cores: the D the finding reads (N/4 and N)
# get the whole grid, the Inception point and the data figures; the other D of seed 0 the cheap end of the grid, where
# the curves are compared; the other seeds only N/4 and N
DEPTH_SIDE_STEPS = (2, 4, 8)
T_SWEEP = [(f"T{t}", {"model.num_blocks": t}) for t in (1, 4, 16)]  # the members of every blocks-* family
MEMBERS = {  # family -> [(member name, config overrides)]
    # the dedicated models, and one elastic model trained at every D of them (its reports: "elastic-D1", ...)
    "vertical": [(f"D{d}", {"model.diffusion_depth": d}) for d in VERTICAL_D]
    + [("elastic", {"model.elastic_depths": list(VERTICAL_D)})],
    "blocks-fmnist": T_SWEEP,
    "blocks-emoji": T_SWEEP,
    "blocks-emoji256": T_SWEEP,
    "blocks-people256": T_SWEEP,
    # the people models' two cures of fitting each training image through its earlier blocks, and both together:
    # the presets people256-T16 (the same run as blocks-people256/T16), -ctx-T16, -cond-T16 and -cond-ctx-T16
    "context-people256": [(name, {}) for name in ("T16", "ctx-T16", "cond-T16", "cond-ctx-T16")],
    # each ablation with every seed of ABLATION_SEEDS ("no-zcond", "no-zcond-s1", ...: workbench.research.replicates)
    "ablations": [
        (seeded_name(name, seed), {**over, "train.seed": seed}) for name, over in ABLATIONS for seed in ABLATION_SEEDS
    ],
    "depth": [
        (
            seeded_name(f"N{n}", seed),
            {
                "model.depth": n,
                "model.diffusion_depth": n // 4,
                "model.elastic_depths": list(range(1, n + 1)),
                "train.seed": seed,
            },
        )
        for n in DEPTH_NS
        for seed in DEPTH_SEEDS[n]
    ],
}
# members that train a multiple of their family's budget: the elastic model gets the four dedicated models' steps
# together (equal total compute, the elastic benchmark's comparison (b))
BUDGET_MULTIPLE = {("vertical", "elastic"): len(VERTICAL_D)}
# the depth family: one dedicated model's steps x its N=4 layers, spread over N layers (steps scale as 4 / N)
BUDGET_MULTIPLE |= {("depth", seeded_name(f"N{n}", seed)): 4 / n for n in DEPTH_NS for seed in DEPTH_SEEDS[n]}


def depth_report_name(name: str, depth: int) -> str:
    """The report of an elastic member sampled at one D ("elastic" at D=3: "elastic-D3")."""
    return f"{name}-D{depth}"


# families whose members are presets of their own, trained with the preset's budget (its GPU budget with --gpu):
# the Fluent 3D emoji at 256 px through the codec trained here (presets emoji256-T1/T4/T16)
# and its people subset, the analogue of the paper's FFHQ (presets people256-T1/T4/T16)
PRESET_FAMILIES = {
    "blocks-emoji256": "emoji256-{name}",
    "blocks-people256": "people256-{name}",
    "context-people256": "people256-{name}",
}

# members scored, drawn and shipped with the sampling that sweeps on another seed picked, instead of the zoo's EMA
# weights on the model's own schedule: {(family, name): {"weights": "ema" or "raw" (the trained weights), "flow_shift":
# the sampling time shift, "cfg_scale": the guidance of a class-conditional model}}. The people models of
# context-people256, all four alike: trained weights at shift 2, guidance w=2 (seed 1, n=500: the context-noise model
# 89.5 against 95.8 for EMA without shift, the conditional one's shift sweep and both models' guidance sweeps;
# benchmarks/RESULTS.md section 7); the zoo's reports are seed 0.
_PICK = {"weights": "raw", "flow_shift": 2.0}
SAMPLING_PICKS = {
    ("context-people256", "T16"): _PICK,
    ("context-people256", "ctx-T16"): _PICK,
    ("context-people256", "cond-T16"): {**_PICK, "cfg_scale": 2.0},
    ("context-people256", "cond-ctx-T16"): {**_PICK, "cfg_scale": 2.0},
}

SHIP_LIMIT_MB = 120  # data/checkpoints: every shipped weight file together (half-precision exports)


# members whose report (and sample grid) ships without weights, to keep data/checkpoints under SHIP_LIMIT_MB: the
# 256 px models but one (30 MB each): the people model with both labels and context noise, the best 256 px model
# (the app's 256 px pick; the all-emoji T=16 model, FID 136.7 and whole silhouettes without detail, gave its 30 MB
# to the depth family's N=8 and N=12 files, 25 MB), the 32 px T=1 model (5 MB: zoo v2's five ablation models take
# 26 MB; T=4 and T=16 show the family) and the 64 px emoji arm (colour blobs at its budget)
REPORT_ONLY = {
    ("blocks-emoji256", "T1"),
    ("blocks-emoji256", "T4"),
    ("blocks-emoji256", "T16"),
    ("blocks-people256", "T1"),
    ("blocks-people256", "T4"),
    ("blocks-people256", "T16"),
    ("context-people256", "T16"),
    ("context-people256", "cond-T16"),
    ("context-people256", "ctx-T16"),
    ("blocks-fmnist", "T1"),
    ("blocks-emoji", "T1"),
    ("blocks-emoji", "T4"),
    ("blocks-emoji", "T16"),
}


def sampling_pick(family: str, name: str) -> tuple[bool, float | None, dict]:
    """(use the EMA weights, flow time shift or None for the model's own, sample-section overrides such as
    {"cfg_scale": 2.0}) a member is scored, drawn and shipped with."""
    pick = SAMPLING_PICKS.get((family, name), {})
    return (
        pick.get("weights", "ema") == "ema",
        pick.get("flow_shift"),
        {k: v for k, v in pick.items() if k == "cfg_scale"},
    )


def ships_weights(family: str, name: str) -> bool:
    """Whether the zoo ships a member's weights, or its report alone: every member but REPORT_ONLY and the ablation
    replicates beyond the first seed (their reports carry the seed spread; one set of weights per ablation is
    enough to look at)."""
    return split_seed(name)[1] == 0 and (family, name) not in REPORT_ONLY


# ---- members: the families built into full configs with their budgets ----------------------------------------------
# a member trains in RUNS/<its key>; members with the same key share the run. WORKBENCH_ZOO_RUNS moves the folder
# (e.g. out of the work tree, where long runs survive a fresh clone)
RUNS = Path(os.environ.get("WORKBENCH_ZOO_RUNS") or REPO_ROOT / "runs" / "zoo").expanduser()

# Budgets. CPU, zoo v2 for Fashion-MNIST: 3,000 steps x 64 images per member (N=4, width 128: 0.17x fmnist-small's
# training FLOPs per step, but small models run below the machine's matmul rate: alone on 2 threads of the AMD EPYC
# reference machine vertical/D1 and D4 trained in 642 and 668 s, about 0.22 s per step, blocks-fmnist/T1 in 6.8
# minutes and T16 in about 12.5 (0.25 s per step); the elastic member trains four of them, 2,688 s); the 64 px emoji
# family keeps the first zoo's 300 x 32.
# GPU sized for < 8 minutes (the PRESET_FAMILIES: their presets' budgets, presets.GPU_BUDGETS with --gpu).
CPU_BUDGET = {"fmnist": dict(steps=3000, batch=64, ema=0.999), "emoji": dict(steps=300, batch=32, ema=0.995)}
GPU_BUDGET = {"fmnist": dict(steps=4000, batch=256, ema=0.999), "emoji": dict(steps=3000, batch=128, ema=0.995)}


def base(dataset: str, budget: dict, gpu: bool) -> Config:
    """The base config of the Fashion-MNIST ("fmnist") or 64 px emoji ("emoji") families at a budget of CPU_BUDGET
    or GPU_BUDGET: N=4, D=2, T=4, width 128, bf16, no sampling or evaluation during training."""
    over = {
        "model.width": 128,
        "model.heads": 2,
        "model.depth": 4,
        "model.diffusion_depth": 2,
        "model.num_blocks": 4,
        "train.batch_size": budget["batch"],
        "train.max_steps": budget["steps"],
        "train.lr": 1e-3,
        "train.ema_decay": budget["ema"],
        "train.ckpt_every": 250,
        "train.sample_every": 0,
        "train.max_minutes": 0.0,
        "train.eval_every": 0,
        "train.log_every": 25,
        "train.precision": "bf16-mixed",
        "train.accelerator": "cuda" if gpu else "cpu",
    }
    return preset("fmnist-small" if dataset == "fmnist" else "emoji64", **over)


# fields added to the config after runs were keyed, with their defaults: left out of the key at those defaults, so
# the runs trained before them keep their folders
KEY_ADDED = {"data.labels": "group", "diffusion.context_noise": 0.0}
# diffusion fields as they were spelled when runs were keyed: train_context_noise was context_noise, and
# flow_shift (now sample.flow_shift, a sampling setting) sat there at 1 in every training config
KEY_SPELLING = {"train_context_noise": "context_noise"}
KEY_MOVED = {"flow_shift": 1.0}


@dataclass(frozen=True)
class Member:
    """One member of the zoo: its family, its name in the family (e.g. "D1", "T16", "no-zcond") and its config."""

    family: str
    name: str
    config: Config

    @property
    def key(self) -> str:
        """Training identity: members with the same model, data and budget share one run."""
        d = self.config.to_dict()
        d["diffusion"] = KEY_MOVED | {KEY_SPELLING.get(k, k): v for k, v in d["diffusion"].items()}
        data, diffusion = (
            {k: v for k, v in d[part].items() if KEY_ADDED.get(f"{part}.{k}", object()) != v}
            for part in ("data", "diffusion")
        )
        blob = json.dumps(
            {
                "model": d["model"],
                "diffusion": diffusion,
                "data": data,
                "train": {k: v for k, v in d["train"].items() if k != "out_dir"},
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def run(self):
        """The folder the member trains in (RUNS/<key>), with its checkpoints, DONE marker and eval reports."""
        return RUNS / self.key


def members(gpu: bool = False) -> list[Member]:
    """Every member of every family, in the zoo's order, with the CPU budgets (GPU budgets and accelerator with
    `gpu`); each config is named "<family>/<name>" and trains in its run folder."""
    budgets = GPU_BUDGET if gpu else CPU_BUDGET
    fm, em = base("fmnist", budgets["fmnist"], gpu), base("emoji", budgets["emoji"], gpu)

    def family_base(family: str, name: str) -> Config:
        if family in PRESET_FAMILIES:  # a preset per member, with the preset's own (GPU) budget
            return preset(PRESET_FAMILIES[family].format(name=name), gpu=gpu)
        return em if family == "blocks-emoji" else fm

    out = []
    for family, entries in MEMBERS.items():
        for name, over in entries:
            cfg = family_base(family, name).override(**over)
            if (family, name) in BUDGET_MULTIPLE:  # e.g. the elastic model: the four dedicated budgets together
                steps = round(cfg.train.max_steps * BUDGET_MULTIPLE[family, name])
                cfg = cfg.override(**{"train.max_steps": steps})
            m = Member(family, name, cfg)
            named = cfg.override(**{"name": f"{family}/{name}", "train.out_dir": str(m.run)})
            out.append(Member(family, name, named))
    return out


def unique_runs(ms: list[Member]) -> dict[str, Member]:
    """{run key: the first member that trains it}: members with identical configs train once."""
    runs: dict[str, Member] = {}
    for m in ms:
        runs.setdefault(m.key, m)
    return runs


def report_names(m: Member) -> dict[str, int | None]:
    """{report name: D it samples at (None: the member's own)}: one per trained D for an elastic member, the
    model's default D first (its report ships beside the weights)."""
    depths = m.config.model.elastic_depths
    if not depths:
        return {m.name: None}
    default = m.config.model.diffusion_depth
    if m.family == "depth" and split_seed(m.name)[1] > 0:  # a replicate: the two D the finding reads
        depths = [d for d in depths if headline_depth(m, d)]
    return {depth_report_name(m.name, d): d for d in sorted(depths, key=lambda d: (d != default, d))}


def headline_depth(m: Member, depth: int | None) -> bool:
    """Whether the report of `m` at `depth` is one its family's finding reads, scored in full (the S grid of
    eval_plan, an Inception point, the data figures): every report but those of the depth family at D other than
    N/4 and N, which get DEPTH_SIDE_STEPS only."""
    if m.family != "depth" or depth is None:
        return True
    return depth in (m.config.model.depth // 4, m.config.model.depth)


def eval_plan(m: Member) -> tuple[str, int, tuple[int, ...]]:
    """(extractor, images per point, S grid) of a member's curve: the fast classifier for Fashion-MNIST (plus one
    Inception point), Inception for the 256 px emoji at n=1,000 (FID at n=256 sits tens of points above its large-n
    value), and Inception at n=256 for the 64 px emoji arm (colour blobs at this budget: a side arm)."""
    if m.config.data.dataset == "fashion-mnist":
        return "fmnist-classifier", 1000, EVAL_STEPS
    if m.config.data.image_size >= 256:
        return "inception", 1000, (8, 16)
    return "inception", 256, (8, 32)
