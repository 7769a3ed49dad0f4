"""The notebook playground driven from Python, as a person drives it in JupyterLab: pick a checkpoint, move the
sliders (the marker on the FID-vs-compute figure follows), press Generate (images, compute meter and FID appear),
press Stop mid-run (the finished blocks stay, exactly as a full run draws them)."""

import io
import threading

import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.core.blocks import block_index_map
from workbench.core.compute import at_depth, paper_cost
from workbench.core.paths import ZOO_DIR
from workbench.research.reports import load_reports
from workbench.ui.playground import Playground
from workbench.ui.session import Loaded, SampleRun, Settings, class_options, fid_text, find_checkpoints, live_reference

pytest.importorskip("ipywidgets")
torch.set_num_threads(1)

ELASTIC = ZOO_DIR / "vertical" / "elastic.safetensors"
needs_zoo = pytest.mark.skipif(not ELASTIC.is_file(), reason="the shipped zoo's elastic checkpoint is missing")


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


@pytest.fixture(scope="module")
def reports():
    return load_reports("vertical")


@needs_zoo
def test_picker_offers_the_zoo_and_notes_what_it_skips(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint at all")
    choices, notes = find_checkpoints([ZOO_DIR, tmp_path, tmp_path / "missing"])
    assert any(c.path == ELASTIC for c in choices)
    assert all(c.path.suffix == ".safetensors" for c in choices)
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert notes[0].startswith("broken.safetensors: skipped") and "Fix:" in notes[1]


@needs_zoo
def test_depth_slider_offers_every_D_of_the_elastic_file_and_moves_the_marker(reports):
    pg = Playground(reports=reports, checkpoint=ELASTIC)
    cfg = pg.choice.config
    assert list(pg.depth.options) == [1, 2, 3, 4] and not pg.depth.disabled
    assert pg.labelled.layout.display == "none"  # unconditional: no class, no guidance
    marks = {}
    for D in (1, 4):
        pg.depth.value = D
        pg.steps.value = 8
        star = pg.figure.data[-1]
        marks[D] = star.x[0]
        assert star.x[0] == paper_cost(at_depth(cfg.model, D), 8)
        report = reports[f"elastic-D{D}"]
        assert star.y[0] == pytest.approx(next(p.fid for p in report.curve if p.steps == 8))
        assert f"D={D}, S=8" in star.name
    T, N = cfg.model.num_blocks, cfg.model.depth
    assert marks[1] == T * ((N - 1) + 1 * 8) and marks[4] == T * 4 * 8  # T[(N-D)+D*S]: the star moves right
    pg.steps.value = 7  # no report measured S=7: the marker is the compute alone (a dotted line, no FID)
    assert "no report" in pg.figure.data[-1].name


@needs_zoo
def test_generate_shows_images_the_meter_and_the_fid(reports):
    pg = Playground(reports=reports, checkpoint=ELASTIC, steps=4, num_images=4, background=False)
    pg.depth.value = 3
    pg.generate_button.click()
    run = pg.run
    assert run.status == "done" and run.finished and run.blocks == run.num_blocks == 4
    assert run.images.shape == (4, 1, 32, 32)
    assert png_size(pg.image.value)[0] > 4 * 32  # four images tiled in one row
    assert run.cost.paper_block_layer_evals == 4 * ((4 - 3) + 3 * 4)  # T[(N-D)+D*S] at D=3, S=4
    assert "block-layer evaluations" in pg.meter.value and "4/4 blocks" in pg.meter.value
    assert run.fid is not None and run.fid.n == 4 and f"FID {run.fid.fid:.1f}" in pg.fid.value
    assert pg.progress.value == 1.0 and not pg.generate_button.disabled and pg.stop_button.disabled


@needs_zoo
def test_stop_mid_run_keeps_the_finished_blocks(reports):
    pg = Playground(reports=reports, checkpoint=ELASTIC, steps=4, num_images=2)
    pg.generate_button.click()
    full = pg.wait(60)
    assert full.finished and not pg.thread.is_alive()

    stopped = threading.Event()
    pg._draw_original = pg._draw

    def press_stop_after_two_blocks(run):
        pg._draw_original(run)
        if run.blocks == 2 and not stopped.is_set():
            stopped.set()
            pg.stop_button.click()  # what the person does; the run ends after the event in progress

    pg._draw = press_stop_after_two_blocks
    pg.generate_button.click()
    run = pg.wait(60)
    assert not pg.thread.is_alive() and stopped.is_set()
    assert run.status == "stopped" and run.blocks == 2 < run.num_blocks
    assert run.fid is None and "stopped after 2 of 4 blocks" in pg.fid.value
    assert pg.image.value and not pg.generate_button.disabled
    f = pg.loaded.codec.downsample  # 1: a pixel model
    done = (block_index_map(pg.loaded.config.model) < 2).repeat_interleave(f, 0).repeat_interleave(f, 1)  # (H, W)
    assert done.float().mean() == 0.5
    assert torch.equal(run.images[..., done], full.images[..., done])  # the finished blocks, as a full run has them


def test_labelled_model_gets_classes_guidance_and_its_labels():
    cfg = wb.preset("tiny", **{"model.num_classes": 10, "model.width": 32})
    names = class_options(cfg)
    assert names[0] == ("all classes", None) and names[1] == ("T-shirt/top", 0) and len(names) == 11
    model = wb.build_model(cfg)
    request, labels = Settings(2, 2, "ddim", 0, 3, label=7, cfg_scale=2.0).request(cfg)
    assert request.cfg_scale == 2.0 and labels.tolist() == [7, 7, 7]
    settings = Settings(2, 2, "ddim", 0, 3, label=7, cfg_scale=2.0)
    run = SampleRun(Loaded.from_model(model, cfg), settings, *live_reference(cfg)).run()
    assert run.finished and run.cost.guidance == 2  # guided: every evaluation also runs the null class
    assert run.fid is not None and run.fid.n == 3  # the shipped Fashion-MNIST reference scores it
    unscored = SampleRun(Loaded.from_model(model, cfg), settings).run()  # no reference statistics: why, no FID
    assert unscored.finished and unscored.fid is None and "no reference statistics" in fid_text(unscored)


def test_refused_settings_end_the_run_with_one_line():
    cfg = wb.preset("tiny", **{"model.width": 32})
    run = SampleRun(Loaded.from_model(wb.build_model(cfg), cfg), Settings(2, 2, "not-a-sampler", 0, 2)).run()
    assert run.status == "error" and run.images is None
    assert "\n" not in run.error and "Fix:" in run.error


def test_empty_folder_is_a_note_not_an_error(tmp_path):
    pg = Playground(folders=[tmp_path])
    assert pg.choice is None and "no checkpoints" in pg.status.value
    pg.generate_button.click()
    assert pg.run is None and "no checkpoint" in pg.status.value
    pg.folder.value = ""
    pg.scan_button.click()
    assert "Fix:" in pg.notes.value
