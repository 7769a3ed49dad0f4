"""The Streamlit app: AppTest runs of the page, the event stream it draws, input bounds, folder confinement.

AppTest sees only the final state of each placeholder, so what the app draws during a run is tested on the
generator (test_frames_*) and the queue in test_scheduler.py. Checkpoints are tiny models written to temporary folders.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fluent_fixture import NAMES, write_fluent, write_tiny_codec
from single_thread import one_thread  # noqa: F401 (autouse; the app itself samples on one thread too)

import workbench as wb
from app import catalog
from app import paths as app_paths
from app.controls import MAX_IMAGES, MAX_STEPS, Request, Side, resolve_sides, side_plan
from app.panels import pictures
from app.runs import Throttle, progress_text
from workbench.core.compute import iso_table
from workbench.core.config import SAMPLERS_FOR
from workbench.research import picks
from workbench.research.groups import group_families, slider_positions
from workbench.sampling.sampler import frame, placeholder
from workbench.training.checkpoint import Checkpoint, export_for_inference, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent

MAIN = str(ROOT / "app" / "main.py")
TIMEOUT = 60  # seconds per AppTest run: loading torch models and the FID reference exceeds the 3 s default
FAMILY_D = (1, 2, 4)  # D=3 stays untrained: the slider must show that position as empty
ELASTIC_D = (1, 2, 4)  # the elastic checkpoint's trained set: D=3 is held out


def tiny_config(name: str, D: int, classes: int = 0, elastic: tuple = ()):
    return wb.preset(
        "tiny",
        **{
            "model.diffusion_depth": D,
            "model.width": 32,
            "model.num_classes": classes,
            "model.elastic_depths": list(elastic),
        },
    ).override(name=name)


def write_checkpoint(
    folder: Path, file: str, name: str, D: int, seed: int = 0, width: int = 32, classes: int = 0, elastic: tuple = ()
) -> Path:
    """An exported (half-precision, EMA-only) checkpoint of a freshly initialised tiny model (trained over the
    depths `elastic` when given); a `width` other than the config's makes a file whose weights do not fit its
    config."""
    return export_model(folder, file, tiny_config(name, D, classes, elastic), seed, width)


def export_model(folder: Path, file: str, cfg, seed: int = 0, width: int | None = None) -> Path:
    """An exported checkpoint of a freshly initialised model of `cfg` (weights of `width` when given)."""
    torch.manual_seed(seed)
    model = wb.build_model(cfg.override(**{"model.width": width or cfg.model.width}))
    with torch.no_grad():
        for p in model.head.parameters():  # the head starts at zero: make the samples depend on the weights
            p.normal_(0, 0.02)
        if model.boundary_embed is not None:  # so is the embedding of D: make D visible in the samples
            model.boundary_embed.weight.normal_(0, 0.05)
    state = model.state_dict()
    run = save_checkpoint(
        Checkpoint(cfg, step=100, model=state, ema=state, data={"samples_seen": 1600}),
        folder / f".run-{cfg.name.replace('/', '-')}",
    )
    return export_for_inference(run, folder / file)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("app")
    user, outside = base / "user", base / "outside"
    paths = {f"D{d}": write_checkpoint(user, f"D{d}.safetensors", f"vertical/D{d}", d) for d in FAMILY_D}
    paths["outside"] = write_checkpoint(outside, "secret.safetensors", "vertical/D3", 3)
    (user / "link.safetensors").symlink_to(paths["outside"])
    return {"user": user, "outside": outside, **paths}


def start(monkeypatch, *argv: str):
    """A fresh AppTest session of the app started as `streamlit run app/main.py -- *argv`."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", [MAIN, *argv])
    monkeypatch.delenv(catalog.ENV_FOLDERS, raising=False)
    return AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()


@pytest.fixture
def app(folders, monkeypatch):
    """A session on the user folder, opening D2 first."""
    return start(monkeypatch, "--checkpoints", str(folders["user"]), "--checkpoint", str(folders["D2"]))


def side_widgets(at, family_label: str, side: str = "A"):
    key = f"{side}@{family_label}"  # controls.widget_key
    return at.select_slider(key=f"{key}.D"), at.slider(key=f"{key}.S"), at.selectbox(key=f"{key}.sampler")


def submit(at):
    return at.button[[b.label for b in at.button].index("Generate")].click().run()


# ---- the page ----------------------------------------------------------------------------------------------------
def test_app_loads_with_family_and_empty_position(app):
    assert not app.exception, app.exception
    family = app.selectbox(key="family")
    assert family.value.startswith("vertical · N=4 T=4")
    depth, steps, sampler = side_widgets(app, family.value)
    assert depth.value == 2 and list(depth.options) == [
        "D=1/N=4 · 100 steps, 2k images",
        "D=2/N=4 · 100 steps, 2k images",
        "D=3/N=4 · not trained",
        "D=4/N=4 · 100 steps, 2k images",
    ]
    assert sampler.options == list(SAMPLERS_FOR["vp"])  # the zoo's models are VP (epsilon) models
    assert any("a link pointing outside the allowed folders, refused" in w.value for w in app.sidebar.warning)


def test_generate_uses_the_sliders_and_reports_fid(app):
    family = app.selectbox(key="family").value
    depth, steps, sampler = side_widgets(app, family)
    depth.set_value(4)
    steps.set_value(3)
    sampler.set_value("dpm++2m")
    app.slider(key="images-16").set_value(12)
    at = submit(app)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    titles = [m.value for m in at.markdown if m.value.startswith("#####")]
    assert titles == ["##### vertical/D4 · D=4 · S=3 · dpm++2m"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["layer evals / image"] == f"{4 * ((4 - 4) + 4 * 3):,}"  # T[(N-D)+D*S]
    assert float(metrics["images / s"]) > 0
    assert at.image, "no image grid"
    assert metrics["samples"] == "12" and at.session_state["runs"][0].images.shape == (12, 1, 32, 32)
    assert float(metrics["FID@12"]) > 0
    assert "fmnist-classifier" in " ".join(c.value for c in at.caption)


def test_more_samples_grow_the_fid_sample(app):
    side_widgets(app, app.selectbox(key="family").value)[1].set_value(2)
    at = submit(app)
    at = at.button(key="more").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["samples"] == f"{16 + 64}"


def test_untrained_position_is_refused(app):
    family = app.selectbox(key="family").value
    side_widgets(app, family)[0].set_value(3)
    at = submit(app)
    assert not at.exception
    assert any("D=3 has no trained checkpoint" in e.value for e in at.error)
    assert not at.image


def test_compare_mode_same_seeds(app):
    app.toggle(key="compare").set_value(True).run()
    family = app.selectbox(key="family").value
    for side in "AB":
        depth, steps, _ = side_widgets(app, family, side)
        depth.set_value(2)
        steps.set_value(2)
    at = submit(app)
    assert not at.exception, at.exception
    titles = [m.value for m in at.markdown if m.value.startswith("#####")]
    assert titles == ["##### A · vertical/D2 · D=2 · S=2 · ddim", "##### B · vertical/D2 · D=2 · S=2 · ddim"]
    runs = at.session_state["runs"]
    assert torch.equal(runs[0].images, runs[1].images)  # same checkpoint, same settings, same seed
    # identical sides: every paired resample scores the same rows on both sides, so the difference is exactly 0
    metrics = {m.label: m.value for m in at.metric}
    n = runs[0].live.n
    assert metrics[f"FID A − B @{n}"] == "+0.0"
    diff = at.session_state["difference"][1][0]
    assert (diff.fid, diff.low, diff.high, diff.n) == (0.0, 0.0, 0.0, n)
    assert any("undecided: the interval contains 0" in m.value for m in at.markdown)


def test_compare_mode_reports_the_paired_difference_of_two_depths(app):
    app.toggle(key="compare").set_value(True).run()
    family = app.selectbox(key="family").value
    for side, d in (("A", 1), ("B", 4)):
        depth, steps, _ = side_widgets(app, family, side)
        depth.set_value(d)
        steps.set_value(2)
    at = submit(app)
    assert not at.exception, at.exception
    a, b = at.session_state["runs"]
    diff = at.session_state["difference"][1][0]
    assert diff.n == a.live.n == b.live.n and diff.extractor == a.fid.extractor
    assert diff.fid == pytest.approx(a.fid.fid - b.fid.fid, abs=1e-6)  # the two FIDs shown above it
    assert diff.low <= diff.fid <= diff.high and diff.resamples == 200  # classifier features: 200 draws
    assert {m.label: m.value for m in at.metric}[f"FID A − B @{diff.n}"] == f"{diff.fid:+.1f}"
    assert any(diff.verdict in m.value for m in at.markdown)


def test_paired_difference_refuses_sides_that_do_not_pair(app):
    from dataclasses import replace

    from app.runs import paired_difference

    app.toggle(key="compare").set_value(True).run()
    at = submit(app)
    a, b = at.session_state["runs"]
    assert paired_difference(a, b)[1] is None
    other_seed = replace(b, seed=b.seed + 1)
    assert "different seeds" in paired_difference(a, other_seed)[1]
    assert "both sides need a live FID" in paired_difference(a, replace(b, live=None))[1]


@pytest.mark.parametrize("where", ["outside", "link"])
def test_paths_outside_the_folders_are_refused(app, folders, where):
    path = folders["outside"] if where == "outside" else folders["user"] / "link.safetensors"
    at = app.text_input(key="path").input(str(path)).run()
    assert not at.exception
    errors = [e.value for e in at.sidebar.error]
    assert errors and "outside the folders this app may open" in errors[0]
    assert "vertical/D3" not in " ".join(at.selectbox(key="family").options)


def test_path_inside_the_folders_opens_that_checkpoint(app, folders):
    at = app.text_input(key="path").input(str(folders["D4"])).run()
    assert not at.sidebar.error
    assert side_widgets(at, at.selectbox(key="family").value)[0].value == 4


def test_sessions_share_no_state(folders, monkeypatch):
    args = ("--checkpoints", str(folders["user"]), "--checkpoint", str(folders["D2"]))
    first, second = start(monkeypatch, *args), start(monkeypatch, *args)
    side_widgets(first, first.selectbox(key="family").value)[1].set_value(2)
    first = submit(first)
    second.run()
    assert len(first.session_state["runs"]) == 1
    assert second.session_state["runs"] == []
    assert side_widgets(second, second.selectbox(key="family").value)[1].value != 2
    assert not second.image


def test_failing_generation_keeps_the_app_usable(app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated sampler fault")
        yield

    with monkeypatch.context() as patch:
        patch.setattr(wb, "generate_events", broken)
        at = submit(app)
    assert not at.exception
    assert any("simulated sampler fault" in e.value for e in at.error)
    at = submit(at)
    assert not at.error, [e.value for e in at.error]
    assert at.image


def test_class_picker_lists_classes_with_images_by_name_and_guidance_starts_at_the_checkpoints(monkeypatch, tmp_path):
    """A checkpoint with sample.class_counts: the picker offers the classes that have training images (named),
    "as in the training data" first, and the guidance slider starts at the checkpoint's own scale."""
    counts = (5, 0, 2, 0, 0, 0, 0, 0, 0, 1)
    cfg = tiny_config("cond/D2", 2, 10).override(**{"sample.class_counts": counts, "sample.cfg_scale": 2.5})
    path = export_model(tmp_path, "cond.safetensors", cfg)
    at = start(monkeypatch, "--checkpoint", str(path))
    key = f"A@{at.selectbox(key='family').value}"
    assert at.selectbox(key=f"{key}.class").options == [
        "classes as often as in the training data",
        "class 0 · T-shirt/top",
        "class 2 · Pullover",
        "class 9 · Ankle boot",
    ]
    assert at.slider(key=f"{key}.cfg").value == 2.5


def test_class_and_guidance_for_class_conditional_checkpoints(monkeypatch, tmp_path):
    path = write_checkpoint(tmp_path, "cond.safetensors", "cond/D2", 2, classes=10)
    at = start(monkeypatch, "--checkpoint", str(path))
    key = f"A@{at.selectbox(key='family').value}"
    assert at.selectbox(key=f"{key}.class").options[:2] == ["all classes in turn", "class 0 · T-shirt/top"]
    at.selectbox(key=f"{key}.class").set_value(3)
    at.slider(key=f"{key}.cfg").set_value(2.0)
    at.slider(key=f"{key}.S").set_value(2)
    at = submit(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [m.value for m in at.markdown if m.value.startswith("#####")] == [
        "##### cond/D2 · D=2 · S=2 · ddim · class 3 · guidance 2"
    ]


def test_the_sidebar_says_which_checkpoints_read_noised_context_in_training(tmp_path):
    noisy = export_model(
        tmp_path, "ctx.safetensors", tiny_config("ctx/D2", 2).override(**{"diffusion.train_context_noise": 0.5})
    )
    plain = write_checkpoint(tmp_path, "plain.safetensors", "plain/D2", 2)
    assert "context noised up to 0.5 in training" in catalog.load_entry(noisy, "user").describe()
    assert "context" not in catalog.load_entry(plain, "user").describe()


def test_corrupt_checkpoint_is_reported_and_others_still_run(folders, monkeypatch, tmp_path):
    good = write_checkpoint(tmp_path, "D1.safetensors", "broken/D1", 1)
    write_checkpoint(tmp_path, "D4.safetensors", "broken/D4", 4, width=64)  # listed, but its weights do not load
    at = start(monkeypatch, "--checkpoints", str(tmp_path), "--checkpoint", str(good))
    depth, steps, _ = side_widgets(at, at.selectbox(key="family").value)
    depth.set_value(4)
    steps.set_value(2)
    at = submit(at)
    assert not at.exception
    assert any("Cannot generate" in e.value and "do not fit" in e.value for e in at.error), [e.value for e in at.error]
    side_widgets(at, at.selectbox(key="family").value)[0].set_value(1)
    at = submit(at)
    assert not at.error and at.image


def write_zoo(zoo: Path, extractor: str) -> None:
    """A zoo as `python -m workbench zoo export` ships it: <family>/<member>.safetensors with the report beside it
    as .json; a report may ship without weights (the ablations)."""
    from workbench.core.compute import cached_cost, paper_cost
    from workbench.research.reports import report_from_dict, write_report

    for family, name, D, fids, weights in [
        ("vertical", "D1", 1, (60, 40, 30), True),
        ("vertical", "D2", 2, (80, 45, 25), True),
        ("ablations", "default", 2, (81, 44, 26), False),
    ]:
        cfg = tiny_config(f"{family}/{name}", D)
        if weights:
            write_checkpoint(zoo / family, f"{name}.safetensors", "vertical/D2", D)  # deduplicated runs keep
        curve = [
            {
                "steps": S,
                "fid": f,
                "paper_cost": paper_cost(cfg.model, S),  # their first member's name
                "cached_cost": cached_cost(cfg.model, S),
            }
            for S, f in zip((2, 4, 8), fids)
        ]
        write_report(
            report_from_dict(
                {
                    "family": family,
                    "name": name,
                    "config": cfg.to_dict(),
                    "training": {},
                    "eval": {"extractor": extractor, "reference": "ref", "n": 1000, "sampler": "ddim", "curve": curve},
                }
            ),
            zoo,
        )


def test_zoo_reports_place_the_run_on_the_frontier(monkeypatch, tmp_path):
    from workbench.evaluation.features import feature_extractor

    write_zoo(tmp_path, feature_extractor("fmnist-classifier").id)
    monkeypatch.setattr(app_paths, "ZOO_DIR", tmp_path)
    at = start(monkeypatch)
    assert at.selectbox(key="family").value.startswith("vertical · N=4 T=4")  # the richest family comes first
    depth = side_widgets(at, at.selectbox(key="family").value)[0]
    assert depth.value == 1 and depth.options[2] == "D=3/N=4 · not trained"
    side_widgets(at, at.selectbox(key="family").value)[1].set_value(4)
    at = submit(at)
    assert not at.exception and not at.error
    compute, steps = ([t.get("name") for t in json.loads(c.proto.spec)["data"]] for c in at.get("plotly_chart"))
    # the frontier spans all families; the run's FID@16 is not drawn among curves at n=1000, only its compute
    assert compute == ["vertical/D1", "vertical/D2", "frontier", "run: compute"]
    assert steps == ["vertical/D1", "vertical/D2", "run: compute"]
    captions = " ".join(c.value for c in at.caption)
    assert "Zoo: 1000 images per FID" in captions and "Your run sits at its compute only: run: FID@16" in captions


# ---- what a run draws (AppTest only sees final states) ---------------------------------------------------------
@pytest.mark.parametrize("preview", [False, True])
def test_frames_follow_the_generator(preview):
    cfg = tiny_config("t", 2)
    model = wb.build_model(cfg)
    clock = iter(range(1000)).__next__  # one "second" per call: every step is due for a preview
    request = wb.sample_request(cfg, num_images=2, steps=3, seed=0)
    events = list(filter(Throttle(preview, 1.0, clock), wb.generate_events(model, cfg, request)))
    blocks = [e for e in events if e.kind == "block"]
    assert [e.block for e in blocks] == list(range(cfg.model.num_blocks)) and blocks[-1].done
    assert sum(e.done for e in events) == 1
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == (cfg.model.num_blocks * 3 if preview else 0)
    done = [progress_text(e)[0] for e in events]
    assert done == sorted(done) and done[-1] == 1.0
    side = cfg.model.block_side * cfg.model.patch_size  # pixels per block side
    for e in events:
        assert e.x0.shape == e.x_t.shape == (2, 1, 32, 32)
        if e.block < cfg.model.num_blocks - 1:  # the last block (bottom right) is still empty
            assert e.x_t[:, :, -side:, -side:].abs().sum() == 0


def test_frames_throttle_previews():
    cfg = tiny_config("t", 2)
    model = wb.build_model(cfg)
    frozen = lambda: 0.0  # noqa: E731 - time stands still: only the first step is previewed
    request = wb.sample_request(cfg, num_images=1, steps=4, seed=0)
    events = list(filter(Throttle(True, 0.25, frozen), wb.generate_events(model, cfg, request)))
    assert [e.kind for e in events] == ["step"] + ["block"] * cfg.model.num_blocks


def test_previews_thin_out_with_the_server_load():
    """Under load each page previews less often (the interval times the generations per worker), finished blocks
    always pass: 4 generations per worker at 0.25 s preview once a second."""
    cfg = tiny_config("t", 2)
    model = wb.build_model(cfg)
    ticks = iter(x * 0.25 for x in range(10_000))
    clock = lambda: next(ticks)  # noqa: E731 - a quarter second passes at every look at the clock
    request = wb.sample_request(cfg, num_images=1, steps=8, seed=0)
    events = list(wb.generate_events(model, cfg, request))
    alone = [e.kind for e in events if Throttle(True, 0.25, clock)(e)]
    ticks = iter(x * 0.25 for x in range(10_000))
    crowded_throttle = Throttle(True, 0.25, clock, load=lambda: 4.0)
    crowded = [e.kind for e in events if crowded_throttle(e)]
    assert crowded.count("block") == alone.count("block") == cfg.model.num_blocks
    assert 0 < crowded.count("step") < alone.count("step") / 2


def test_sampling_leaves_the_cached_model_untouched(folders):
    from workbench.training.checkpoint import load_for_inference

    model, cfg = load_for_inference(folders["D2"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    list(wb.generate_events(model, cfg, wb.sample_request(cfg, num_images=2, steps=2, seed=0, cfg_scale=1.0)))
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- bounds and folders ------------------------------------------------------------------------------------------
def test_validate_bounds(folders):
    entries, _ = catalog.scan(catalog.Folders(Path("/nonexistent"), (folders["user"].resolve(),), None))
    family = group_families(entries)[0]
    ok = Side(2, 10, "ddim", None, 1.0)
    assert [e.D for e in resolve_sides(Request((ok,), 4, 0, True), family)] == [2]
    bad = [
        Request((ok,), MAX_IMAGES + 1, 0, True),
        Request((ok,), 0, 0, True),
        Request((ok,), 4, -1, True),
        Request((Side(2, MAX_STEPS + 1, "ddim", None, 1.0),), 4, 0, True),
        Request((Side(2, 10, "rm -rf", None, 1.0),), 4, 0, True),
        Request((Side(3, 10, "ddim", None, 1.0),), 4, 0, True),
        Request((Side(2, 10, "ddim", 0, 1.0),), 4, 0, True),  # a class for an unconditional model
        Request((Side(2, 10, "ddim", None, 3.0),), 4, 0, True),  # guidance without classes
        Request((ok, ok, ok), 4, 0, True),
    ]
    for request in bad:
        with pytest.raises(ValueError, match="Fix:"):
            resolve_sides(request, family)


def test_check_path_confines_to_the_folders(folders, tmp_path):
    f = catalog.Folders(Path("/nonexistent"), (folders["user"].resolve(),), None)
    assert catalog.check_path(str(folders["D1"]), f) == folders["D1"].resolve()
    for refused in [
        folders["outside"],
        folders["user"] / "link.safetensors",
        folders["user"] / ".." / "outside",
        "/etc/passwd",
        folders["user"] / "missing.safetensors",
        "",
        "x" * 5000,
        "a\0b",
    ]:
        with pytest.raises(catalog.PathRefused, match="Fix:"):
            catalog.check_path(str(refused), f)
    bad = folders["user"] / "bad-run"  # a run folder whose `latest` points out of the folders
    bad.mkdir(exist_ok=True)
    (bad / "latest").write_text(os.path.relpath(folders["outside"], bad) + "\n")
    with pytest.raises(catalog.PathRefused, match="outside the allowed folders"):
        catalog.check_path(str(bad), f)


def test_folders_from_command_line_and_environment(folders, tmp_path):
    f = catalog.folders_from(
        ["-q", "--checkpoints", str(tmp_path), "--checkpoint", str(folders["D1"])],
        {catalog.ENV_FOLDERS: os.pathsep.join([str(folders["user"]), ""])},
    )
    assert f.user == (tmp_path.resolve(), folders["user"].resolve()) and f.default == folders["D1"].resolve()
    broken = catalog.folders_from(["--checkpoint", str(tmp_path / "nope")], {})
    assert broken.default is None and "--checkpoint" in broken.problems[0]


def test_a_stopped_run_keeps_its_finished_blocks(app, monkeypatch):
    """Stop (or any rerun) cancels the page's job at its next step; the blocks finished so far stay on the page
    and come back on the rerun, without a meter or FID of a batch that never finished."""
    from app.scheduler import Scheduler

    jobs, real = [], wb.generate_events
    submit_job = Scheduler.submit

    def recording(self, *args, **kwargs):
        jobs.append((self, submit_job(self, *args, **kwargs)))
        return jobs[-1][1]

    def stopped_after_two_blocks(*args, **kwargs):
        for event in real(*args, **kwargs):
            yield event
            if event.kind == "block" and event.block == 1:
                queue, job = jobs[-1]
                queue.cancel(job)  # what the Stop button's rerun does

    with monkeypatch.context() as patch:
        patch.setattr(Scheduler, "submit", recording)
        patch.setattr(wb, "generate_events", stopped_after_two_blocks)
        side_widgets(app, app.selectbox(key="family").value)[1].set_value(2)
        at = submit(app)
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = at.session_state["runs"][0]
    assert (run.blocks, run.num_blocks, run.finished) == (2, 4, False)
    hatch = placeholder(32, 32)
    assert (run.images[:, :, 16:] == hatch[16:]).all() and (run.images[:, :, :16] != hatch[:16]).any()  # top half
    at = at.run()
    assert not at.exception and at.image
    assert [p.proto.text for p in at.get("progress")] == ["stopped after block 2/4 · 16 images from seed 0"]
    assert not [m for m in at.metric if m.label.startswith("FID")]


# ---- an elastic checkpoint: one file, every D in 1..N ------------------------------------------------------------
@pytest.fixture(scope="module")
def elastic(tmp_path_factory) -> Path:
    return write_checkpoint(
        tmp_path_factory.mktemp("elastic"), "elastic.safetensors", "elastic/E", 2, elastic=ELASTIC_D
    )


@pytest.fixture
def elastic_app(elastic, monkeypatch):
    return start(monkeypatch, "--checkpoint", str(elastic))


def elastic_widgets(at, side: str = "A") -> dict:
    key = f"{side}@{at.selectbox(key='family').value}"
    return {
        "D": at.select_slider(key=f"{key}.D"),
        "S": at.slider(key=f"{key}.S"),
        "iso": at.checkbox(key=f"{key}.iso"),
        "iso_D": at.selectbox(key=f"{key}.iso_D"),
        "Dk": at.text_input(key=f"{key}.Dk"),
        "Sk": at.text_input(key=f"{key}.Sk"),
    }


def titles(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("#####")]


def test_elastic_checkpoint_gives_a_slider_over_every_depth(elastic_app):
    at = elastic_app
    assert not at.exception, at.exception
    w = elastic_widgets(at)
    assert w["D"].value == 2 and list(w["D"].options) == [
        "D=1/N=4 · trained",
        "D=2/N=4 · trained",
        "D=3/N=4 · held out",
        "D=4/N=4 · trained",
    ]
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "elastic: trained at D in {1, 2, 4}, every other D in 1..4 held out" in sidebar
    assert w["iso"].value is False and w["iso_D"].value == 2 and w["Dk"].value == w["Sk"].value == ""


@pytest.mark.parametrize("D", [1, 3])
def test_every_depth_samples_from_the_one_file_and_held_out_ones_say_so(elastic_app, elastic, D):
    w = elastic_widgets(elastic_app)
    w["D"].set_value(D)
    w["S"].set_value(2)
    at = submit(elastic_app)
    assert not at.exception and not at.error, [e.value for e in at.error]
    held = " · held out D=3: allow_untrained_depth" if D == 3 else ""
    assert titles(at) == [f"##### elastic/E · D={D} · S=2 · ddim{held}"]
    run = at.session_state["runs"][0]
    assert run.checkpoint == elastic.resolve() and run.images.shape == (16, 1, 32, 32)
    assert {m.label: m.value for m in at.metric}["layer evals / image"] == f"{4 * ((4 - D) + D * 2):,}"
    captions = " ".join(c.value for c in at.caption)
    assert ("Held out of training: D=3, sampled with allow_untrained_depth" in captions) == (D == 3)


def write_depth_reports(folder: Path, fids: dict[int, tuple[float, float, float]], steps: int, stem: str = "E") -> None:
    """Eval reports of the elastic checkpoint <stem>.safetensors at each D of `fids` ({D: (fid, low, high)} at
    `steps`), where the zoo puts them: its sidecar <stem>.json at the file's D=2, "<stem>-D<k>.json" for the others."""
    for D, (fid, low, high) in fids.items():
        cfg = tiny_config("elastic/E", D, elastic=(1, 2, 3, 4))
        point = {"steps": steps, "fid": fid, "fid_low": low, "fid_high": high, "paper_cost": 1.0, "cached_cost": 1.0}
        report = {
            "family": "elastic",
            "name": f"E-D{D}",
            "config": cfg.to_dict(),
            "training": {},
            "eval": {"n": 1000, "curve": [point]},
        }
        (folder / (f"{stem}.json" if D == 2 else f"{stem}-D{D}.json")).write_text(json.dumps(report))


# FID at the default steps per D: (fid, low, high); the depth the slider should open at
OPENINGS = [
    ({1: (20.9, 19.6, 22.2), 2: (13.3, 12.5, 14.0), 3: (11.72, 10.9, 12.5), 4: (11.71, 10.9, 12.4)}, 3),  # the zoo's
    ({1: (20.9, 19.6, 22.2), 2: (13.3, 12.5, 14.0), 3: (13.0, 12.2, 13.8), 4: (11.7, 10.9, 12.4)}, 4),  # D=4 clear
    ({1: (10.0, 9.0, 11.0), 2: (13.3, 12.5, 14.0), 3: (11.7, 10.9, 12.5), 4: (11.7, 10.9, 12.4)}, 1),
    ({2: (13.3, 12.5, 14.0)}, 2),  # one report only
]


@pytest.mark.parametrize("fids,want", OPENINGS)
def test_elastic_family_opens_at_its_best_reported_depth(tmp_path, fids, want):
    """The slider starts at the cheapest trained D whose shipped FID at the app's default steps lies inside the best
    D's interval (issue: the default app model at its default steps); reports elsewhere or at other steps do not
    count, and a file without them opens at the D it was exported at."""
    from workbench.research.picks import default_steps

    folder = tmp_path / "elastic"
    path = write_checkpoint(folder, "E.safetensors", "elastic/E", 2, elastic=(1, 2, 3, 4))
    steps = default_steps(tiny_config("elastic/E", 2, elastic=(1, 2, 3, 4)))
    write_depth_reports(folder, fids, steps)
    decoy = tmp_path / "decoy"  # a better D=1 report of the same member in another folder: not this file's
    write_checkpoint(decoy, "E.safetensors", "elastic/E", 2, elastic=(1, 2, 3, 4))
    write_depth_reports(decoy, {1: (1.0, 0.5, 1.5)}, steps)
    family = group_families([catalog.load_entry(path, "user")])[0]
    assert sorted(r.D for r in family.elastic.depth_reports) == sorted(fids)
    assert picks.opening_depth(family, steps) == want
    assert picks.opening_depth(family, steps + 1) == 2  # no report at these steps: the exported D
    bare = write_checkpoint(tmp_path / "bare", "E.safetensors", "elastic/E", 2, elastic=(1, 2, 3, 4))
    assert picks.opening_depth(group_families([catalog.load_entry(bare, "user")])[0], steps) == 2


def test_app_opens_the_elastic_family_at_its_best_depth_and_refuses_a_bad_depth_report(tmp_path, monkeypatch):
    from workbench.research.picks import default_steps

    folder = tmp_path / "user" / "elastic"
    write_checkpoint(folder, "E.safetensors", "elastic/E", 2, elastic=(1, 2, 3, 4))
    write_depth_reports(folder, OPENINGS[0][0], default_steps(tiny_config("elastic/E", 2)))
    monkeypatch.setattr(app_paths, "ZOO_DIR", tmp_path / "no-zoo")
    at = start(monkeypatch, "--checkpoints", str(tmp_path / "user"))
    assert not at.exception, at.exception
    assert elastic_widgets(at)["D"].value == 3
    why = [c.value for c in at.sidebar.caption if c.value.startswith("Opens at")]
    assert why == [
        "Opens at D=3: the cheapest depth whose shipped FID at S=16 lies inside the best one's interval "
        "(D=1 20.9 [19.6, 22.2], D=2 13.3 [12.5, 14.0], D=3 11.7 [10.9, 12.5], D=4 11.7 [10.9, 12.4]; "
        "n=1,000)."
    ]
    sidebar = " ".join(m.value for m in at.sidebar.markdown)  # named after the member, not its D=2 report
    assert "- elastic/E: N=4 (elastic: trained at D in {1, 2, 3, 4}), T=4, width 32" in sidebar
    curves = [t["name"] for t in json.loads(at.get("plotly_chart")[1].proto.spec)["data"]]
    assert curves == ["elastic/E-D1", "elastic/E-D2", "elastic/E-D3", "elastic/E-D4"]  # every D's report
    (folder / "E-D4.json").unlink()
    (folder / "E-D4.json").symlink_to(folder / "E-D3.json")  # a link is refused, not followed
    entries, notes = catalog.scan(catalog.Folders(Path("/nonexistent"), ((tmp_path / "user").resolve(),), None))
    assert not entries and len(notes) == 1 and "E-D4.json: not a regular file" in notes[0] and "Fix:" in notes[0]
    (folder / "E-D4.json").unlink()
    (folder / "E-D4.json").write_text("{not json")
    entries, notes = catalog.scan(catalog.Folders(Path("/nonexistent"), ((tmp_path / "user").resolve(),), None))
    assert not entries and len(notes) == 1 and "E-D4.json: not valid JSON" in notes[0] and "Fix:" in notes[0]


def test_iso_compute_moves_steps_with_depth(elastic_app):
    assert iso_table(4, 2, 16) == [(1, 31), (2, 16), (3, 11), (4, 9)]  # C = 2 + 2*16 = 34; (34 - 0)/4 = 8.5 -> 9
    assert iso_table(4, 2, 4) == [(1, 7), (2, 4), (3, 3), (4, 3)]  # C = 10: (10 - 3)/1, ..., (10 - 0)/4
    assert iso_table(4, 4, 1) == [(1, 1), (2, 1), (3, 1), (4, 1)]  # at least 1 step
    w = elastic_widgets(elastic_app)
    w["iso"].check()
    w["iso_D"].set_value(2)
    w["S"].set_value(4)
    w["D"].set_value(3)
    at = submit(elastic_app)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert titles(at) == [
        "##### elastic/E · D=3 · S=4 · ddim · S_k 3,3,3,3 · iso-compute C=10 (D_ref=2, S=4) · "
        "held out D=3: allow_untrained_depth"
    ]
    assert {m.label: m.value for m in at.metric}["layer evals / image"] == f"{4 * 10:,}"  # T * C: (4-3) + 3*3
    assert (
        "every block costs C = (N − D_ref) + D_ref·S = 10 layer evaluations; D=1: S=7, D=2: S=4, D=3: S=3, "
        "D=4: S=3." in " ".join(c.value for c in at.caption)
    )


def test_schedule_controls_reach_the_sampler(elastic_app, monkeypatch):
    calls, real = [], wb.generate_events

    def recording(*args, **kwargs):
        calls.append(args[2])  # the sampling request
        yield from real(*args, **kwargs)

    w = elastic_widgets(elastic_app)
    w["Dk"].input("4,3,2,1")
    w["Sk"].input("3 2 2 1")
    with monkeypatch.context() as patch:
        patch.setattr(wb, "generate_events", recording)
        at = submit(elastic_app)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [(c.depth_schedule, c.steps_schedule, c.allow_untrained_depth) for c in calls] == [
        ((4, 3, 2, 1), (3, 2, 2, 1), True)
    ]
    assert titles(at) == [
        "##### elastic/E · D=2 · S=16 · ddim · D_k 4,3,2,1 · S_k 3,2,2,1 · held out D=3: allow_untrained_depth"
    ]
    paper = sum((4 - d) + d * s for d, s in zip((4, 3, 2, 1), (3, 2, 2, 1)))
    assert {m.label: m.value for m in at.metric}["layer evals / image"] == f"{paper:,}"


def test_bad_elastic_inputs_are_refused_on_the_page(elastic_app):
    elastic_widgets(elastic_app)["Dk"].input("4,3")
    at = submit(elastic_app)
    assert not at.exception and not at.image
    assert any("D_k: 2 values for T=4 blocks" in e.value and "Fix:" in e.value for e in at.error), [
        e.value for e in at.error
    ]


def test_validate_elastic_bounds(elastic, folders):
    fam = group_families([catalog.load_entry(elastic.resolve(), "user")])[0]
    assert fam.elastic and fam.positions() == [1, 2, 3, 4] and fam.trained() == list(ELASTIC_D)
    ok = Side(3, 4, "ddim", None, 1.0, "4,3,2,1", "", 2)
    assert resolve_sides(Request((ok,), 4, 0, True), fam)[0].path == elastic.resolve()
    plan = side_plan(ok, fam.elastic.config)
    assert (plan.depths, plan.steps, plan.held_out, plan.iso_cost) == ((4, 3, 2, 1), (3, 3, 4, 7), (3,), 10)
    assert plan.sample_kwargs() == {
        "depth_schedule": (4, 3, 2, 1),
        "steps_schedule": (3, 3, 4, 7),
        "allow_untrained_depth": True,
    }
    bad = {
        "D 0": Side(0, 4, "ddim", None, 1.0),
        "D 5": Side(5, 4, "ddim", None, 1.0),
        "D bool": Side(True, 4, "ddim", None, 1.0),
        "D_k length": Side(2, 4, "ddim", None, 1.0, "1,2,3"),
        "D_k range": Side(2, 4, "ddim", None, 1.0, "1,2,3,9"),
        "D_k text": Side(2, 4, "ddim", None, 1.0, "1,2,x,4"),
        "D_k sign": Side(2, 4, "ddim", None, 1.0, "1,-2,3,4"),
        "D_k type": Side(2, 4, "ddim", None, 1.0, (1, 2, 3, 4)),
        "D_k long": Side(2, 4, "ddim", None, 1.0, "1," * 300),
        "S_k zero": Side(2, 4, "ddim", None, 1.0, "", "0,1,1,1"),
        "S_k over": Side(2, 4, "ddim", None, 1.0, "", f"1,1,1,{MAX_STEPS + 1}"),
        "iso ref": Side(2, 4, "ddim", None, 1.0, "", "", 7),
        "iso and S_k": Side(2, 4, "ddim", None, 1.0, "", "1,1,1,1", 2),
        "iso over": Side(1, MAX_STEPS, "ddim", None, 1.0, "", "", 4),
    }  # S(1) = 4 * 200 - 3 steps
    for what, side in bad.items():
        with pytest.raises(ValueError, match="Fix:"):
            resolve_sides(Request((side,), 4, 0, True), fam)
            pytest.fail(what)
    dedicated = group_families(
        catalog.scan(catalog.Folders(Path("/nonexistent"), (folders["user"].resolve(),), None))[0]
    )[0]
    for side in (
        Side(2, 4, "ddim", None, 1.0, "1,2,1,2"),
        Side(2, 4, "ddim", None, 1.0, "", "2,2,2,2"),
        Side(2, 4, "ddim", None, 1.0, "", "", 2),
    ):
        with pytest.raises(ValueError, match="need an elastic checkpoint.*Fix:"):
            resolve_sides(Request((side,), 4, 0, True), dedicated)
    assert side_plan(Side(2, 4, "ddim", None, 1.0), dedicated.entries[0].config).sample_kwargs() == {}


# ---- a 256 px latent model: each finished block decoded, the others a placeholder, shown at true size ------------
def latent_config(fluent: Path, codec: Path):
    """The emoji256 preset (Fluent 3D at 256 px as 32x32x4 latents) shrunk to a tiny model, on the fixture codec."""
    return wb.preset(
        "emoji256-T4",
        **{
            "model.width": 32,
            "model.heads": 2,
            "model.depth": 4,
            "model.diffusion_depth": 2,
            "data.root": str(fluent),
            "data.vae_path": str(codec),
        },
    ).override(name="blocks-emoji256/T4")


@pytest.fixture(scope="module")
def latent(tmp_path_factory) -> dict[str, Path]:
    """A tiny untrained 256 px latent checkpoint, its synthetic Fluent package and tiny codec, and the package's
    Inception statistics over every image, built as scripts/build_reference.py builds them (in a tmp folder)."""
    from workbench.evaluation import metrics
    from workbench.evaluation.evaluate import build_reference

    base = tmp_path_factory.mktemp("latent")
    cfg = latent_config(write_fluent(base / "fluent"), write_tiny_codec(base / "codec"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "FEATURE_LOG_DIR", base / "features")
        build_reference(cfg.data, "inception", folder=base / "reference")
    return {"checkpoint": export_model(base / "checkpoints", "T4.safetensors", cfg), "reference": base / "reference"}


def test_a_256px_latent_family_draws_decoded_blocks_at_true_size_with_an_inception_fid(latent, monkeypatch):
    from workbench.data.codecs import VAECodec
    from workbench.evaluation import evaluate as evaluation

    monkeypatch.setattr(evaluation, "REFERENCE_DIR", latent["reference"])  # instead of data/reference/
    decoded, decode = [], VAECodec.decode
    monkeypatch.setattr(VAECodec, "decode", lambda self, z, *a, **k: decoded.append(len(z)) or decode(self, z, *a, **k))
    at = start(monkeypatch, "--checkpoint", str(latent["checkpoint"]))
    assert not at.exception, at.exception
    family = at.selectbox(key="family").value
    assert family.startswith("blocks-emoji256 · N=4 T=4 · fluent 256px (latents 4x32x32, codec codec) · ")
    side_widgets(at, family)[1].set_value(3)
    assert at.slider(key="images-4").value == 4  # large images start at four, shown at their true size
    assert at.checkbox(key="preview").value  # previews asked for: a latent model's steps are still not decoded
    at = submit(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = at.session_state["runs"][0]
    assert run.finished and run.images.shape == (4, 3, 256, 256)
    assert 1 <= len(decoded) <= 4 and set(decoded) == {4}  # the batch, at most once per block (see below)
    # one picture per image (panels.pictures), then the run's thumbnail in the page's history
    assert [len(image.proto.imgs) for image in at.image] == [4, 1]
    reference = f"fluent-256px-all-inception-{len(NAMES)}"
    assert run.fid.extractor.startswith("inception-") and run.fid.reference == reference
    assert f"reference: `{reference}` ({len(NAMES)} real images)" in " ".join(c.value for c in at.caption)


def test_frames_of_a_latent_model_decode_finished_blocks_and_hatch_the_rest(latent):
    from workbench.data.codecs import build_codec
    from workbench.training.checkpoint import load_for_inference

    model, cfg = load_for_inference(latent["checkpoint"])
    codec = build_codec(cfg.data)
    hatch, side = placeholder(256, 256), 128  # T=4: blocks are 128x128 pixel squares in raster order
    request = wb.sample_request(cfg, num_images=2, steps=2, seed=0)
    blocks = [e for e in wb.generate_events(model, cfg, request) if e.kind == "block"]
    for e in blocks:
        shown, decoded = frame(codec, e), codec.decode(e.x_t)  # (2, 3, 256, 256)
        for k in range(cfg.model.num_blocks):
            rows, cols = (slice(i * side, (i + 1) * side) for i in divmod(k, 2))
            if k > e.block:
                assert (shown[:, :, rows, cols] == hatch[rows, cols]).all(), (e.block, k)
                assert (decoded[:, :, rows, cols] != hatch[rows, cols]).any()  # what the zero latents decode to
            else:
                assert torch.equal(shown[:, :, rows, cols], decoded[:, :, rows, cols]), (e.block, k)
    assert torch.equal(frame(codec, blocks[-1]), codec.decode(blocks[-1].x_t))  # the finished image, unpainted


class Recorder:
    """A RunView stand-in: the progress texts of the frames runs.stream_jobs draws, and how often it moved the bar."""

    def __init__(self):
        self.drawn, self.moved = [], 0

    def show_images(self, images, done, text):
        self.drawn.append(text)

    def show_progress(self, done, text):
        self.moved += 1

    def show_meter(self, run):
        pass

    def show_fid(self, result, problem):
        pass


@pytest.mark.parametrize("slow", ["sampler", "decoder"])
def test_a_latent_run_decodes_finished_blocks_only_and_skips_outdated_ones(latent, monkeypatch, slow):
    """With previews asked for, a latent model's steps only move the progress bar; a page that keeps up with the
    sampler draws every block as it finishes, one slower than it (a slow decoder) skips the outdated frames."""
    import time

    from app.runs import Loaded, PageRun, stream_jobs, submit
    from app.scheduler import Limits, Scheduler
    from workbench.data.codecs import VAECodec, build_codec
    from workbench.training.checkpoint import load_for_inference

    model, cfg = load_for_inference(latent["checkpoint"])
    ld = Loaded(model, cfg, build_codec(cfg.data), None, "no reference")
    assert not ld.previews
    decoded, decode, sample = [], VAECodec.decode, wb.generate_events

    def slow_decode(self, z, *args, **kwargs):
        decoded.append(len(z))
        time.sleep(0.5 if slow == "decoder" else 0)
        return decode(self, z, *args, **kwargs)

    def slow_sampler(*args, **kwargs):
        for event in sample(*args, **kwargs):
            yield event
            time.sleep(0.3 if slow == "sampler" and event.kind == "block" else 0)

    monkeypatch.setattr(VAECodec, "decode", slow_decode)
    monkeypatch.setattr(wb, "generate_events", slow_sampler)
    side = Side(2, 3, cfg.sample.sampler, None, 1.0)
    run = PageRun("", side, latent["checkpoint"], "blocks-emoji256/T4", 2, 0, plan=side_plan(side, cfg), image_size=256)
    queue, view = Scheduler(Limits(workers=1)), Recorder()
    try:
        stream_jobs(queue, "s", submit(queue, "s", [run], [ld], preview=True), [run], [ld], [view], time.perf_counter())
    finally:
        queue.close()
    assert run.finished and run.images.shape == (2, 3, 256, 256) and view.drawn[-1] == "block 4/4 finished"
    assert all(text.endswith("finished") for text in view.drawn) and view.moved > 0  # steps: the bar only
    if slow == "sampler":
        assert view.drawn == [f"block {k}/4 finished" for k in range(1, 5)] and len(decoded) == 4
    else:
        assert len(decoded) == len(view.drawn) < 4


def test_pictures_upscale_small_grids_and_keep_large_images_at_their_size():
    import numpy as np

    from workbench.data.images import to_uint8

    small = pictures(torch.zeros(16, 1, 32, 32))
    assert len(small) == 1 and small[0].size == (3 * 138, 3 * 138)  # one 4x4 grid, upscaled 3x (nearest)
    large = torch.rand(3, 3, 256, 256) * 2 - 1
    shown = pictures(large)
    assert [p.size for p in shown] == [(256, 256)] * 3
    assert all(np.array_equal(np.asarray(p), a) for p, a in zip(shown, to_uint8(large)))  # the pixels, unresized


@pytest.mark.parametrize("elastic_set,want", [((1, 2, 4), "elastic"), ((1,), "vertical")])
def test_app_opens_on_the_family_with_the_most_trained_depths(tmp_path, elastic_set, want):
    """An elastic file whose trained set is larger than a dedicated family's D count is where the slider has most
    to show, so the app opens there (issue: the elastic Fashion-MNIST model by default); a smaller set does not."""
    zoo = tmp_path / "zoo"
    for d in (2, 3):
        write_checkpoint(zoo / "vertical", f"D{d}.safetensors", f"vertical/D{d}", d)
    write_checkpoint(zoo / "elastic", "E.safetensors", "elastic/E", elastic_set[0], elastic=elastic_set)
    folders = catalog.Folders(zoo.resolve(), (), None, ())
    entries, notes = catalog.scan(folders)
    fams = group_families(entries)
    assert not notes and sorted(slider_positions(f) for f in fams) == sorted([2, len(elastic_set)])
    chosen = picks.default_entry(fams, folders.default)
    assert chosen.family == want and (chosen.elastic == (want == "elastic"))
    # a deeper elastic model holds more depths but draws slower: the fewest layers open (the zoo's depth family)
    deep_cfg = tiny_config("depth/N8", 2, 0, ()).override(
        **{"model.depth": 8, "model.elastic_depths": list(range(1, 9))}
    )
    deep = export_model(zoo / "depth", "N8.safetensors", deep_cfg)
    fams = group_families(catalog.scan(folders)[0])
    assert max(slider_positions(f) for f in fams) == 8 and picks.default_entry(fams, folders.default).path != deep
    assert picks.default_entry(fams, folders.default).family == want


def test_one_click_picks_the_elastic_default_and_the_256px_family(latent, monkeypatch, tmp_path):
    """The sidebar's picks: the family the app opens on (the elastic one, every D) and the largest images, each one
    click away; the picked family's button is the primary one."""
    user = tmp_path / "user"
    (user / "emoji256").mkdir(parents=True)
    shutil.copy(latent["checkpoint"], user / "emoji256" / "T4.safetensors")
    write_checkpoint(user / "vertical", "D2.safetensors", "vertical/D2", 2)
    write_checkpoint(user / "elastic", "E.safetensors", "vertical/elastic", 2, elastic=(1, 2, 3, 4))
    fams = group_families(catalog.scan(catalog.Folders(Path("/nonexistent"), (user.resolve(),), None))[0])
    offered = picks.quick_picks(fams)
    assert list(offered) == ["fashion-mnist 32px, every D", "fluent 256px"]
    monkeypatch.setattr(app_paths, "ZOO_DIR", tmp_path / "no-zoo")  # these folders only, not the shipped zoo
    at = start(monkeypatch, "--checkpoints", str(user))
    assert not at.exception, at.exception
    assert at.selectbox(key="family").value == offered["fashion-mnist 32px, every D"]  # opens on the elastic family
    at = at.button(key=f"pick.{offered['fluent 256px']}").click().run()
    assert not at.exception and at.selectbox(key="family").value == offered["fluent 256px"]
    assert at.button(key=f"pick.{offered['fluent 256px']}").proto.type == "primary"
    at = at.button(key=f"pick.{offered['fashion-mnist 32px, every D']}").click().run()
    assert at.selectbox(key="family").value == offered["fashion-mnist 32px, every D"]
    assert picks.quick_picks(fams[:1]) == {}  # one family: nothing to pick between
    # the zoo's case: four dedicated files and an elastic one trained at the same four D: the elastic one opens
    write_checkpoint(user / "vertical", "D1.safetensors", "vertical/D1", 1)
    for d in (3, 4):
        write_checkpoint(user / "vertical", f"D{d}.safetensors", f"vertical/D{d}", d)
    folders = catalog.Folders(Path("/nonexistent"), (user.resolve(),), None)
    fams = group_families(catalog.scan(folders)[0])
    assert sorted(slider_positions(f) for f in fams) == [1, 4, 4]
    assert picks.default_entry(fams, folders.default).elastic


def test_the_zoo_opens_with_distinct_menu_labels_and_the_best_256px_model_one_click_away():
    """First impressions on the shipped zoo: every family label in the menu differs (the ablations name the switch
    they turn off), and the 256 px pick is the best shipped 256 px model, with the sampling its report was scored
    with (sampler, trained weights, flow shift, guidance) carried by the export."""
    entries, notes = catalog.scan(catalog.folders_from([], environ={}))
    fams = group_families(entries)
    labels = [f.label for f in fams]
    assert len(set(labels)) == len(labels), labels
    assert any("no-clean" in label for label in labels) and any("no-zcond" in label for label in labels)
    show = picks.showcase_family(fams)
    entry = show.entries[0]
    assert entry.name == "context-people256/cond-ctx-T16"
    assert picks.quick_picks(fams)["fluent-people 256px"] == show.label
    cfg, ev = entry.config, entry.report.eval
    assert (cfg.sample.sampler, picks.default_steps(cfg)) == (ev["sampler"], 16)
    assert cfg.sample.cfg_scale == 2.0 and cfg.sample.flow_shift == 2.0 and ev["weights"] == "raw"
    others = [f for f in fams if f is not show and f.entries[0].config.data.image_size == 256]
    assert all(picks.shipped_fid(show) < picks.shipped_fid(f) for f in others)  # the only 256 px weights today
    assert picks.default_entry(fams).name == "vertical/elastic"  # the N=4 elastic file opens, not a deeper one


# ---- a lab instrument: downloads, command line, URL, history, compare across families ----------------------------
def test_downloads_decode_to_the_shown_images_and_the_record_says_where_they_came_from(app):
    import io
    import zipfile

    from PIL import Image

    from app import exports
    from workbench.data.images import to_uint8

    side_widgets(app, app.selectbox(key="family").value)[1].set_value(2)
    app.slider(key="images-16").set_value(5)
    at = submit(app)
    assert not at.exception, at.exception
    run = at.session_state["runs"][0]
    shown = to_uint8(run.images)  # (5, 32, 32, 1): the pixels the page's grid is cut from
    archive = zipfile.ZipFile(io.BytesIO(exports.zip_bytes(run)))
    names = sorted(archive.namelist())
    assert names == ["run.json"] + [f"seed0-image{i:03d}.png" for i in range(5)]
    for i in range(5):
        image = np.asarray(Image.open(io.BytesIO(archive.read(f"seed0-image{i:03d}.png"))))
        assert image.shape == (32, 32) and np.array_equal(image, shown[i, ..., 0])  # true size, lossless
    assert archive.read("run.json") == exports.record_json(run)
    record = json.loads(exports.record_json(run))
    assert record["settings"]["steps"] == 2 and record["settings"]["num_images"] == 5
    assert record["provenance"]["checkpoint"] == str(run.checkpoint) and record["provenance"]["torch"]
    assert record["fid"]["n"] == 5 and record["fid"]["extractor"] == run.fid.extractor
    assert record["command"] == exports.command_line(run)
    assert any("python -m workbench sample" in c.value for c in at.code)  # the command-line box


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> Path:
    """A training checkpoint that holds trained weights and an EMA that differs from them (an export holds one)."""
    cfg = tiny_config("both/D2", 2)
    torch.manual_seed(0)
    model = wb.build_model(cfg)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.02)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: v + 0.05 * torch.randn_like(v) if k.startswith("head") else v.clone() for k, v in trained.items()}
    folder = tmp_path_factory.mktemp("both")
    save_checkpoint(Checkpoint(cfg, step=100, model=trained, ema=ema, data={"samples_seen": 1600}), folder / "run")
    return folder


def both_app(monkeypatch, folder: Path):
    """A session on the training checkpoint of `both`, at S=1 and 2 images (the fastest run)."""
    at = start(monkeypatch, "--checkpoints", str(folder), "--checkpoint", str(folder / "run"))
    key = f"A@{at.selectbox(key='family').value}"
    at.slider(key=f"{key}.S").set_value(1)
    at.slider(key="images-16").set_value(2)
    return at, key


def test_the_weights_control_appears_only_for_files_with_both_and_changes_the_image(app, folders, both, monkeypatch):
    """An export holds one set: the control is disabled and says why. A training checkpoint holds both: EMA by
    default, trained weights on request, which change the image and reach the title, the JSON, the URL and the
    history's restore."""
    from streamlit.testing.v1 import AppTest

    from app import exports
    from app.weights import check_choice

    key = f"A@{app.selectbox(key='family').value}"
    held = app.radio(key=f"{key}.weights_held")
    assert held.disabled and held.value == "ema" and f"{key}.weights" not in app.session_state
    assert any("hold only their EMA weights (an export ships one set)" in c.value for c in app.caption)
    at, key = both_app(monkeypatch, both)
    choice = at.radio(key=f"{key}.weights")
    assert not choice.disabled and choice.value == "ema" and choice.options == ["EMA weights", "trained weights"]
    ema = submit(at).session_state["runs"][0]
    at.radio(key=f"{key}.weights").set_value("raw")
    at = submit(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    raw = at.session_state["runs"][0]
    assert (ema.images - raw.images).abs().max() > 0.01  # the EMA differs from the trained weights
    assert raw.title.endswith("· trained weights") and "trained weights" not in ema.title
    settings = json.loads(exports.record_json(raw))["settings"]
    assert settings["weights"] == "raw" and settings["use_ema"] is False
    assert at.session_state["history"][0].restore[f"{key}.weights"] == "raw"
    params = {k: v[0] if isinstance(v, list) else v for k, v in at.query_params.items()}
    assert params["weights"] == "raw"
    monkeypatch.setattr(sys, "argv", [MAIN, "--checkpoints", str(both)])
    linked = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    linked.query_params.update(params)
    assert linked.run().radio(key=f"{key}.weights").value == "raw"  # a link restores the trained weights
    with pytest.raises(ValueError, match="holds only its EMA weights.*Fix:"):  # a client sending "raw" for one
        check_choice("raw", catalog.load_entry(folders["D2"], "user"))


def test_the_command_line_box_redraws_the_page_images(both, monkeypatch, tmp_path):
    """The command shown under a run, run through the CLI, writes the very images of the page (per-image seeds),
    here of the trained weights of a file that holds both: the command carries --no-ema."""
    import shlex

    from PIL import Image

    from app import exports
    from workbench.__main__ import main as cli
    from workbench.data.images import image_grid

    at, key = both_app(monkeypatch, both)
    at.slider(key=f"{key}.S").set_value(2)
    at.slider(key="images-16").set_value(3)
    at.number_input(key="seed").set_value(7)
    at.radio(key=f"{key}.weights").set_value("raw")
    at = submit(at)
    run = at.session_state["runs"][0]
    out = tmp_path / "cli.png"
    command = exports.command_line(run, out=str(out))
    assert "--no-ema" in command and any(exports.command_line(run) == c.value for c in at.code)  # the page's box
    assert cli(shlex.split(command)[3:]) == 0  # after "python -m workbench"
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(image_grid(run.images)))


def test_the_scrubber_shows_the_chosen_step_and_keeps_under_its_cap(app, folders, monkeypatch):
    """After a run the scrubber redraws any recorded step of any block as the sampler had it (the frame a preview
    of that step shows); a cap too small for every step records every 2nd step back from each block's last."""
    from app import history
    from app.trajectory import Trajectory
    from workbench.data.codecs import PixelCodec
    from workbench.data.images import to_uint8
    from workbench.training.checkpoint import load_for_inference

    # 2 images of 1x32x32 at T=4, S=4: latents and one frame take 10,240 bytes, a recorded step (x0 and x_t of a
    # block, half precision) 2,048: all 16 steps need 43,008 bytes, steps 1, 2, 4 of each block 34,816
    cap = 40_000
    monkeypatch.setattr(history, "TRAJECTORY_BYTES", cap)
    side_widgets(app, app.selectbox(key="family").value)[1].set_value(4)
    app.slider(key="images-16").set_value(2)
    at = submit(app)
    traj = at.session_state["trajectories"][0]
    assert traj.stride == 2 and traj.kept == {k: (1, 2, 4) for k in range(4)} and traj.shown is None  # nothing decoded
    key = f"traj.A.{traj.serial}"
    at = at.toggle(key=f"{key}.on").set_value(True).run()
    at.selectbox(key=f"{key}.block").set_value(1)
    at = at.run()
    assert at.select_slider(key=f"{key}.step1").options == ["1/4", "2/4", "4/4"]
    at = at.select_slider(key=f"{key}.step1").set_value(2).run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("Block 2/4 at step 2/4: predicted x0") for c in at.caption)
    model, cfg = load_for_inference(folders["D2"])
    events = wb.generate_events(model, cfg, wb.sample_request(cfg, num_images=2, steps=4, seed=0))
    event = next(e for e in events if (e.kind, e.block, e.step) == ("step", 1, 2))
    want = to_uint8(frame(PixelCodec(1), event)).astype(int)
    assert traj.shown[0] == (1, 2, "x0") and np.abs(traj.shown[1].astype(int) - want).max() <= 1  # half precision
    assert (traj.shown[1][:, 16:] == want[:, 16:]).all()  # the hatch over blocks 3 and 4
    at.selectbox(key=f"{key}.block").set_value(3)
    at = at.radio(key=f"{key}.mode").set_value("x_t").run()
    at = at.select_slider(key=f"{key}.step3").set_value(4).run()
    assert traj.shown[0] == (3, 4, "x_t")  # x_t after the last step of the last block: the run's images
    assert np.array_equal(traj.shown[1], to_uint8(at.session_state["runs"][0].images))
    assert traj.nbytes <= cap
    assert Trajectory(cfg, 64, (200,) * 4, cap).stride is None  # not even two steps a block fit: none recorded


def test_settings_survive_a_link(app, folders, monkeypatch):
    """After Generate the URL holds model, D, S, sampler, seed and images; a page opened with it starts there; a
    parameter that does not fit is ignored with a note naming it."""
    from streamlit.testing.v1 import AppTest

    family = app.selectbox(key="family").value
    depth, steps, sampler = side_widgets(app, family)
    depth.set_value(4)
    steps.set_value(3)
    sampler.set_value("dpm++2m")
    app.slider(key="images-16").set_value(6)
    app.number_input(key="seed").set_value(11)
    at = submit(app)
    params = {k: at.query_params[k] for k in ("model", "D", "S", "sampler", "seed", "images", "source")}
    params = {k: v[0] if isinstance(v, list) else v for k, v in params.items()}
    assert params == {
        "model": "vertical/D4",
        "D": "4",
        "S": "3",
        "sampler": "dpm++2m",
        "seed": "11",
        "images": "6",
        "source": "user",  # the user folder's vertical/D4, not the zoo's member of that name
    }
    monkeypatch.setattr(sys, "argv", [MAIN, "--checkpoints", str(folders["user"])])
    fresh = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    fresh.query_params.update(params)
    fresh = fresh.run()
    assert not fresh.exception, fresh.exception
    assert fresh.selectbox(key="family").value == family
    depth, steps, sampler = side_widgets(fresh, fresh.selectbox(key="family").value)
    assert (depth.value, steps.value, sampler.value) == (4, 3, "dpm++2m")
    assert fresh.number_input(key="seed").value == 11 and fresh.slider(key="images-16").value == 6
    bad = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    bad.query_params.update({**params, "D": "3", "S": "9999"})  # D=3 has no file in this family
    bad = bad.run()
    notes = [w.value for w in bad.sidebar.warning]
    assert any("D='3'" in n for n in notes) and any("S='9999'" in n for n in notes), (notes, bad.warning)
    assert side_widgets(bad, bad.selectbox(key="family").value)[2].value == "dpm++2m"  # what fits still applies


def test_history_keeps_the_runs_under_its_cap_and_restores_settings(app):
    from app import history

    family = app.selectbox(key="family").value
    for d in (1, 4):
        side_widgets(app, family)[0].set_value(d)
        side_widgets(app, family)[1].set_value(2)
        app = submit(app)
    past = app.session_state["history"]
    assert [p.title for p in past] == ["vertical/D4 · D=4 · S=2 · ddim", "vertical/D1 · D=1 · S=2 · ddim"]
    app = app.button(key="history.1.restore").click().run()
    assert not app.exception and side_widgets(app, family)[0].value == 1
    # the cap: big runs push the oldest out, by count and by bytes
    big = torch.zeros(64, 3, 256, 256)  # 12 MiB of 8-bit pixels: one fits the 16 MiB cap, two do not
    kept: list = []
    for i in range(3):
        kept = history.remember(kept, history.past(f"run {i}", "", big, b"{}", {}))
        assert sum(p.nbytes for p in kept) <= history.HISTORY_BYTES
    assert [p.title for p in kept] == ["run 2"]
    small = [history.past(f"s{i}", "", torch.zeros(2, 1, 8, 8), b"{}", {}) for i in range(20)]
    for item in small:
        kept = history.remember(kept, item)
    assert len(kept) == history.HISTORY_RUNS and kept[0].title == "s19"


def test_compare_two_families_side_by_side(folders, monkeypatch, tmp_path):
    """Compare mode's B may be another family; same features and reference: a paired difference."""
    user = tmp_path / "user"
    write_checkpoint(user / "a", "D2.safetensors", "vertical/D2", 2)
    write_checkpoint(user / "b", "E.safetensors", "elastic/E", 2, elastic=(1, 2, 4))
    at = start(monkeypatch, "--checkpoints", str(user))
    at.toggle(key="compare").set_value(True).run()
    labels = at.selectbox(key="family").options
    a_label = next(x for x in labels if x.startswith("vertical") and "your folder" in x)
    b_label = next(x for x in labels if x.startswith("elastic") and "your folder" in x)
    at.selectbox(key="family").set_value(a_label).run()
    at = at.selectbox(key="family_b").set_value(b_label).run()
    side_widgets(at, a_label, "A")[1].set_value(2)
    side_widgets(at, b_label, "B")[1].set_value(2)
    at = submit(at)
    assert not at.exception, at.exception
    titles = [m.value for m in at.markdown if m.value.startswith("#####")]
    assert titles[0].startswith("##### A · vertical/D2") and titles[1].startswith("##### B · elastic/E")
    diff, problem = at.session_state["difference"][1]
    assert problem is None and diff.low <= diff.fid <= diff.high
