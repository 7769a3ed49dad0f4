"""Config validation as a property: any value, any field, any route (override, YAML, CLI) either gives a config
that builds, trains a step and samples, or a ValueError that names a field and the fix, never another exception."""

import re

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from workbench.__main__ import main
from workbench.core.config import Config
from workbench.core.diffusion import Diffusion

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECTIONS = {name: section for name, section in Config().to_dict().items() if isinstance(section, dict)}
FIELDS = [f"{s}.{k}" for s, section in SECTIONS.items() for k in section]
INT_FIELDS = {
    f"{s}.{k}"
    for s, section in SECTIONS.items()
    for k, v in section.items()
    if isinstance(v, int) and not isinstance(v, bool)
}
NAMES_A_FIELD = re.compile(r"\b(model|diffusion|data|train|sample)\.\w+|^name:|^config:")

TEXT = st.sampled_from(
    [
        "",
        "auto",
        "true",
        "no",
        "separate",
        "token",
        "ddim",
        "folder",
        "vae",
        "skip",
        "linear",
        "v_prediction",
        "3.5",
        "-0",
        "1e3",
        "nan",
        "[1, 2]",
        "16-mixed",
        "ddp",
        "fsdp",
    ]
)
FINITE = st.one_of(
    st.integers(-3, 70),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=5),
    TEXT,
    st.none(),
    st.lists(st.integers(-1, 3), max_size=3),
)
ANY = st.one_of(FINITE, st.floats(), st.sampled_from(["inf", "-inf", "1e999"]))


def finite_for_int_fields(key: str, value) -> bool:
    """Infinity in an integer field is the known OverflowError (test_infinity_in_an_integer_field below)."""
    return key not in INT_FIELDS or not (
        isinstance(value, float) and value in (float("inf"), float("-inf")) or value in ("inf", "-inf", "1e999")
    )


def assert_names_field_and_fix(err: ValueError, keys) -> None:
    """The message names a config field (or the unknown key the user wrote) and the fix."""
    msg = str(err)
    assert "Fix:" in msg and (NAMES_A_FIELD.search(msg) or any(k in msg for k in keys)), msg


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS + ["name", "model.nope", "nope.depth"]), ANY, min_size=1, max_size=4))
@example({"model.depth": float("nan")})
@example({"train.devices": "two"})
def test_any_override_gives_a_config_or_a_value_error(overrides):
    overrides = {k: v for k, v in overrides.items() if finite_for_int_fields(k, v)}
    try:
        cfg = wb.preset("tiny").override(**overrides)
    except ValueError as err:
        assert_names_field_and_fix(err, overrides)
        return
    assert Config.from_yaml(cfg.to_yaml()).to_yaml() == cfg.to_yaml()  # every valid config survives YAML


@settings(SETTINGS, max_examples=50)  # each example builds the whole argparse parser
@given(st.dictionaries(st.sampled_from(FIELDS), ANY, min_size=1, max_size=3))
def test_any_cli_option_exits_0_or_2_with_one_line(capsys, overrides):
    argv = ["train", "--preset", "tiny", "--print-config"]
    for key, value in overrides.items():
        if finite_for_int_fields(key, str(value)):
            argv += [f"--{key}", str(value)]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, err)
    if code == 2:
        assert err.count("\n") == 1 and "Fix:" in err and "Traceback" not in err, err
    else:
        Config.from_yaml(out)


@st.composite
def tiny_models(draw) -> dict:
    """Tiny model settings: valid ones, or ones with one field (drawn, or none) set to a bad or mismatched value."""
    size, channels = draw(st.sampled_from([8, 16])), draw(st.sampled_from([1, 3]))
    depth = draw(st.integers(1, 3))
    good = {
        "data.image_size": size,
        "data.channels": channels,
        "model.latent_size": size,
        "model.latent_channels": channels,
        "model.patch_size": draw(st.sampled_from([1, 2, 4])),
        "model.num_blocks": draw(st.sampled_from([1, 4])),
        "model.depth": depth,
        "model.diffusion_depth": draw(st.integers(1, depth)),
        "model.width": draw(st.sampled_from([8, 16, 32])),
        "model.heads": draw(st.sampled_from([1, 2])),
        "model.mlp_ratio": draw(st.floats(0.01, 4)),
        "model.towers": draw(st.sampled_from(["separate", "shared"])),
        "model.denoiser_attention": draw(st.sampled_from(["context", "block", "token"])),
        "model.num_classes": draw(st.integers(0, 3)),
        "model.label_dropout": draw(st.sampled_from([0.0, 0.5])),
        "model.clean_stream": draw(st.booleans()),
        "model.use_z_cond": draw(st.booleans()),
        "model.qk_norm": draw(st.booleans()),
        "diffusion.prediction": draw(st.sampled_from(["epsilon", "v_prediction"])),
        "sample.sampler": draw(st.sampled_from(["ddpm", "ddim", "dpm++2m", "euler"])),
    }
    bad = {
        "model.latent_size": [4, 16, 0],
        "model.latent_channels": [4, 2],
        "model.patch_size": [3, 8, 0, -1],
        "model.num_blocks": [2, 9, 16, 64, 0],
        "model.depth": [0, -1],
        "model.diffusion_depth": [0, 4, -1],
        "model.width": [0, 4, 12, 24],
        "model.heads": [0, 3, 4, -1],
        "model.mlp_ratio": [0.0, -1.0],
        "model.towers": ["both"],
        "model.denoiser_attention": ["full"],
        "model.num_classes": [-1],
        "model.label_dropout": [1.0, -0.1],
        "data.channels": [2, 4],
        "data.image_size": [4, 12],
    }
    broken = draw(st.one_of(st.none(), st.sampled_from(sorted(bad))))
    if broken is not None:
        good[broken] = draw(st.sampled_from(bad[broken]))
    return good


@SETTINGS
@given(tiny_models())
def test_every_valid_tiny_config_trains_a_step_and_samples(overrides):
    try:
        cfg = wb.preset("tiny").override(**overrides)
    except ValueError as err:
        assert_names_field_and_fix(err, overrides)
        return
    model = wb.build_model(cfg)
    m = cfg.model
    x0 = torch.randn(2, m.latent_channels, m.latent_size, m.latent_size)  # (B, C, H, W)
    labels = torch.tensor([0, m.num_classes - 1]) if m.num_classes else None
    loss = Diffusion(cfg.diffusion, m).loss(model, x0, labels).total
    loss.backward()
    assert torch.isfinite(loss)
    out = wb.generate(model.eval(), cfg, num_images=1, steps=2, seed=0)
    assert out.shape == (1, m.latent_channels, m.latent_size, m.latent_size) and torch.isfinite(out).all()


@pytest.mark.parametrize("value", [float("inf"), "inf", "1e999"])
def test_infinity_in_an_integer_field(value):
    with pytest.raises(ValueError, match="model.depth.*Fix:"):
        wb.preset("tiny").override(**{"model.depth": value})
