"""The zoo's definition: its families, their members (config overrides of each family's base) and the S grid of
every evaluation curve. experiments/zoo.py trains and evaluates them; reports, notebooks and the app read them."""

from __future__ import annotations

from .replicates import seeded_name, split_seed

FAMILIES = (
    "vertical",
    "blocks-fmnist",
    "blocks-emoji",
    "blocks-emoji256",
    "blocks-people256",
    "context-people256",
    "ablations",
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
}
# members that train a multiple of their family's budget: the elastic model gets the four dedicated models' steps
# together (equal total compute, the elastic benchmark's comparison (b))
BUDGET_MULTIPLE = {("vertical", "elastic"): len(VERTICAL_D)}


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
# 256 px models but one per dataset (30 MB each): emoji256 T=16, and for the people the model with both labels
# and context noise, the best of the people models (the app shows it; the others ship their reports), the 32 px
# T=1 model (5 MB: zoo v2's five ablation models take 26 MB; T=4 and T=16 show the family) and the 64 px emoji arm
# (colour blobs at its budget)
REPORT_ONLY = {
    ("blocks-emoji256", "T1"),
    ("blocks-emoji256", "T4"),
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
