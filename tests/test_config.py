import pytest

import workbench as wb
from workbench.core.config import Config, ModelConfig
from workbench.core.presets import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_yaml(name, tmp_path):
    cfg = wb.preset(name)
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert Config.from_yaml(path) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg


def test_paper_presets_match_the_paper():
    for name, T in (("ffhq1024-paper", 16), ("imagenet256-paper", 4)):
        m = wb.preset(name).model
        assert (m.depth, m.width, m.heads, m.diffusion_depth, m.num_blocks, m.latent_channels) == (
            28,
            1152,
            18,
            14,
            T,
            4,
        )
    assert wb.preset("ffhq1024-paper").model.block_tokens == 256


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"depth": 4, "diffusion_depth": 5}, "model.diffusion_depth"),
        ({"num_blocks": 9, "latent_size": 32, "patch_size": 4}, "model.num_blocks"),  # 3x3 blocks on an 8x8 grid
        ({"num_blocks": 8}, "not a square"),
        ({"width": 100, "heads": 3}, "model.heads"),
        ({"width": 96, "heads": 16}, "multiple of 4"),
        ({"patch_size": 3}, "model.patch_size"),
        ({"towers": "both"}, "model.towers"),
        ({"denoiser_attention": "mlp"}, "model.denoiser_attention"),
        ({"clean_stream": False, "use_z_cond": False}, "model.use_z_cond"),
    ],
)
def test_invalid_model_configs_name_field_and_fix(fields, needle):
    with pytest.raises(ValueError, match="Fix:") as err:
        ModelConfig(**fields)
    assert needle in str(err.value)


def test_cross_section_validation_and_overrides():
    with pytest.raises(ValueError, match="model.latent_size"):
        wb.preset("tiny", **{"data.image_size": 64})
    with pytest.raises(ValueError, match="unknown field 'dept'"):
        wb.preset("tiny", **{"model.dept": 3})
    with pytest.raises(ValueError, match="expected an integer"):
        wb.preset("tiny", **{"model.depth": "deep"})
    cfg = wb.preset("tiny", **{"model.depth": "6", "model.towers": "shared", "model.qk_norm": "false"})
    assert cfg.model.depth == 6 and cfg.model.towers == "shared" and cfg.model.qk_norm is False
    with pytest.raises(ValueError, match="unknown preset"):
        wb.preset("nope")


def test_devices_accepts_count_list_and_auto():
    for value, want in (("2", 2), (2.0, 2), ("auto", "auto"), ([0, 1], [0, 1])):
        assert wb.preset("tiny", **{"train.devices": value}).train.devices == want
    with pytest.raises(ValueError, match="train.devices"):
        wb.preset("tiny", **{"train.devices": "many"})


@pytest.mark.parametrize("name,twin", [("fmnist-elastic", "fmnist-small"), ("emoji256-elastic", "emoji256-T4")])
def test_elastic_presets_are_their_twins_with_every_depth_trainable(name, twin):
    cfg, base = wb.preset(name), wb.preset(twin)
    assert cfg.model.elastic_depths == tuple(range(1, cfg.model.depth + 1)) and cfg.model.movable_boundary
    assert cfg.model.depths == tuple(range(1, cfg.model.depth + 1)) and cfg.model.diffusion_depth == 3
    assert cfg.override(**{"model.elastic_depths": []}).model == base.model  # nothing else changes
    assert cfg.train.out_dir == f"runs/{name}" and cfg.name == name


@pytest.mark.parametrize("blocks", [1, 4, 16])
def test_people256_presets_are_emoji256_on_the_people_subset(blocks):
    """The FFHQ analogue differs from its emoji256 twin in the dataset and the budget alone (and its name and run
    folder)."""
    cfg, twin = wb.preset(f"people256-T{blocks}"), wb.preset(f"emoji256-T{blocks}")
    assert cfg.data.dataset == "fluent-people" and twin.data.dataset == "fluent"
    assert (
        cfg.override(
            **{
                "data.dataset": "fluent",
                "name": twin.name,
                "train.out_dir": twin.train.out_dir,
                "train.max_steps": twin.train.max_steps,
                "train.max_minutes": twin.train.max_minutes,
            }
        )
        == twin
    )
    assert cfg.train.max_steps == 5000 and cfg.train.max_minutes == 60.0
    assert cfg.train.out_dir == f"runs/people256-T{blocks}" and cfg.model.num_blocks == blocks


def test_people256_ctx_preset_is_people256_with_noisy_context_and_the_range_is_checked():
    cfg, base = wb.preset("people256-ctx-T16"), wb.preset("people256-T16")
    assert cfg.diffusion.train_context_noise == 0.5 and base.diffusion.train_context_noise == 0.0
    assert (
        cfg.override(**{"name": base.name, "train.out_dir": base.train.out_dir, "diffusion.train_context_noise": 0.0})
        == base
    )
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"diffusion.train_context_noise: got .*Fix: use 0 to 0.5"):
            base.override(**{"diffusion.train_context_noise": bad})


def test_people256_cond_ctx_preset_is_the_cond_preset_with_the_ctx_presets_context_noise():
    cfg, cond, ctx = (wb.preset(n) for n in ("people256-cond-ctx-T16", "people256-cond-T16", "people256-ctx-T16"))
    assert cfg.diffusion.train_context_noise == ctx.diffusion.train_context_noise > 0 and cfg.model.num_classes == 48
    assert (
        cfg.override(**{"name": cond.name, "train.out_dir": cond.train.out_dir, "diffusion.train_context_noise": 0.0})
        == cond
    )
    assert wb.preset("people256-cond-ctx-T16", gpu=True).train.accelerator == "cuda"


def test_people256_cond_preset_is_people256_made_class_conditional():
    """The class-conditional FFHQ analogue is people256-T16 with group x tone labels, guidance and label proportions;
    the proportions are the training set's (checked against the fetched package when it is here)."""
    cfg, base = wb.preset("people256-cond-T16"), wb.preset("people256-T16")
    assert cfg.model.num_classes == 48 and cfg.data.labels == "group-tone" and cfg.sample.cfg_scale > 1
    assert (
        cfg.override(
            **{
                "name": base.name,
                "train.out_dir": base.train.out_dir,
                "model.num_classes": 0,
                "data.labels": "group",
                "sample.class_counts": [],
                "sample.cfg_scale": 1.0,
            }
        )
        == base
    )
    counts = cfg.sample.class_counts
    assert len(counts) == 48 and sum(counts) == 1786 and sum(c > 0 for c in counts) == 36
    from workbench.data import emoji
    from workbench.data.datasets import build_dataset

    if (emoji.FLUENT_DIR / "SHA256SUMS").is_file():
        ds = build_dataset(cfg.data, "train")
        assert tuple(sum(y == k for _, y in ds.samples) for k in range(48)) == counts
