"""CLI: options generated from the config dataclasses, one-line usage errors with exit code 2, `sample` PNGs."""

import json
import os

import pytest
import yaml
from conftest import randomize_head
from PIL import Image
from single_thread import one_thread  # noqa: F401 (autouse)

import workbench as wb
from workbench.__main__ import main
from workbench.sampling.sampler import PLACEHOLDER
from workbench.training.checkpoint import Checkpoint, save_checkpoint

HATCH = {round((float(v) + 1) * 127.5) for v in PLACEHOLDER}  # the hatch's two grey levels in a saved PNG


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse exits by itself on its own errors
        return exit_.code


def printed_config(capsys, *argv: str) -> dict:
    assert run(["train", *argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_overrides_take_types_from_the_dataclasses(capsys):
    cfg = printed_config(
        capsys,
        "--preset",
        "tiny",
        "--model.depth",
        "6",
        "--model.use_z_cond",
        "false",
        "--train.lr",
        "2e-3",
        "--data.root",
        "/data",
        "--train.max_minutes",
        "5",
        "--name",
        "exp",
    )
    assert cfg["model"]["depth"] == 6 and cfg["model"]["use_z_cond"] is False and cfg["train"]["lr"] == 2e-3
    assert cfg["data"]["root"] == "/data" and cfg["train"]["max_minutes"] == 5.0 and cfg["name"] == "exp"
    assert cfg["model"]["width"] == wb.preset("tiny").model.width  # untouched fields keep the preset's values


def test_preset_then_file_then_options(capsys, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {depth: 6, width: 96}\ntrain: {lr: 0.01}\n")  # a partial config
    cfg = printed_config(capsys, "--preset", "tiny", "--config", str(path), "--model.depth", "8")
    assert (cfg["model"]["depth"], cfg["model"]["width"], cfg["train"]["lr"]) == (8, 96, 0.01)
    assert cfg["model"]["heads"] == wb.preset("tiny").model.heads and cfg["name"] == "tiny"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--model.dept", "3"], "did you mean --model.depth"),  # a prefix of a real option is not accepted
        (["--model.depth", "abc"], "model.depth: expected an integer"),
        (["--model.use_z_cond", "maybe"], "model.use_z_cond: expected true/false"),
        (["--model.diffusion_depth", "9"], "model.diffusion_depth"),  # validation of the resulting config
        (["--train.nope", "1"], "unknown option --train.nope"),
        (["--preset", "nope"], "invalid choice"),
        (["--config", "missing.yaml"], "no such file"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, argv, says):
    assert run(["train", "--preset", "tiny", *argv] if argv[0] != "--preset" else ["train", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_sample_writes_a_grid_and_block_frames(tmp_path):
    cfg = wb.preset("tiny", **{"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1})
    model = wb.build_model(cfg)
    randomize_head(model)
    save_checkpoint(Checkpoint(cfg, 0, model.state_dict(), model.state_dict()), tmp_path / "run")
    out, frames = tmp_path / "grid.png", tmp_path / "frames"
    assert (
        run(
            [
                "sample",
                "--checkpoint",
                str(tmp_path / "run"),
                "--num-images",
                "4",
                "--steps",
                "2",
                "--sampler",
                "ddim",
                "--seed",
                "1",
                "--out",
                str(out),
                "--frames",
                str(frames),
            ]
        )
        == 0
    )
    grid = Image.open(out)
    assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2) and grid.mode == "L"  # 2x2 tiles with 2-pixel gutters
    pixels = list(grid.get_flattened_data())
    assert len(set(pixels)) > 10  # an image, not a blank or saturated tile
    assert sorted(p.name for p in frames.iterdir()) == [f"block-{k:02d}.png" for k in range(cfg.model.num_blocks)]
    last = Image.open(frames / "block-03.png")
    assert list(last.get_flattened_data()) == pixels  # the last block's frame is the finished image
    # earlier frames hatch the blocks not generated yet (sampling.frame), one more block finished each time
    hatched = [
        sum(p in HATCH for p in Image.open(frames / f"block-{k:02d}.png").get_flattened_data()) for k in range(4)
    ]
    assert hatched[0] > hatched[1] > hatched[2] > hatched[3] == 0 and hatched[0] > 0.5 * 4 * 32 * 32


@pytest.mark.parametrize("depth, diffusion_depth, blocks", [(2, 1, 4), (3, 3, 1), (2, 2, 16)])
def test_eval_writes_a_report_with_provenance_and_cost(tmp_path, capsys, depth, diffusion_depth, blocks):
    """`eval` scores a checkpoint's samples and says what made every number: extractor, reference, n, sampler,
    steps, weights, seed; its analytic and measured FLOPs agree; the report is reproducible from its seed."""
    cfg = wb.preset(
        "tiny",
        **{
            "model.width": 32,
            "model.heads": 2,
            "model.depth": depth,
            "model.diffusion_depth": diffusion_depth,
            "model.num_blocks": blocks,
        },
    )
    model = wb.build_model(cfg)
    randomize_head(model)
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}  # distinguishable from the raw weights
    save_checkpoint(Checkpoint(cfg, 7, model.state_dict(), ema), tmp_path / "run")
    argv = [
        "eval",
        "--checkpoint",
        str(tmp_path / "run"),
        "--num-samples",
        "12",
        "--steps",
        "2",
        "--sampler",
        "euler",
        "--seed",
        "3",
    ]
    reports = []
    for extra, name in (([], "a.json"), ([], "b.json"), (["--no-ema"], "raw.json")):
        assert run([*argv, *extra, "--out", str(tmp_path / name)]) == 0
        reports.append(json.loads((tmp_path / name).read_text()))
    a, b, raw = reports
    assert a["fid"] == b["fid"] and a["fid_inf"] == b["fid_inf"]  # same seed, same numbers
    assert raw["weights"] == "raw" and a["weights"] == "ema" and raw["fid"] != a["fid"]
    assert (a["n"], a["steps"], a["sampler"], a["seed"], a["checkpoint_step"]) == (12, 2, "euler", 3, 7)
    assert a["extractor"].startswith("fmnist-classifier-") and a["reference_count"] == 60000
    assert (
        a["reference"] == "fashion-mnist-32px-train-fmnist-classifier-60000" and a["reference_card"]["split"] == "train"
    )
    assert a["fid_low"] < a["fid"] < a["fid_high"] and a["kid_subset_size"] == 12
    cost = a["cost"]
    assert cost["paper_cost"] == blocks * ((depth - diffusion_depth) + diffusion_depth * 2)
    assert cost["flops_measured_over_analytic"] == pytest.approx(1, abs=0.1)
    assert len(a["checkpoint_sha256"]) == 64 and a["model"]["T"] == blocks
    assert "fid" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "extra, says, code",
    [
        (["--num-samples", "5"], "Fix: use at least 10", 1),
        (["--steps", "0"], "sample.steps", 1),
        (["--reference", "nope.safetensors"], "no such file", 2),
        (["--sampler", "heun"], "invalid choice", 2),
    ],
)
def test_eval_bad_inputs_name_the_fix(tmp_path, capsys, extra, says, code):
    cfg = wb.preset("tiny", **{"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1})
    model = wb.build_model(cfg)
    save_checkpoint(Checkpoint(cfg, 0, model.state_dict(), None), tmp_path / "run")
    assert run(["eval", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "r.json"), *extra]) == code
    assert says in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_sample_and_eval_take_depths_and_schedules(tmp_path, capsys):
    """An elastic checkpoint sampled from the CLI at another D, with per-block schedules and per-step depths; eval
    records the plan it scored; a schedule of the wrong length or an untrained D fails naming the field."""
    cfg = wb.preset(
        "tiny",
        **{
            "model.width": 32,
            "model.heads": 2,
            "model.depth": 4,
            "model.diffusion_depth": 2,
            "model.elastic_depths": (1, 2, 3),
            # v-prediction keeps an untrained model's 2-step samples in [-1, 1]: epsilon's x0 estimate at the
            # first step is ~100x out of range, every pixel saturates and schedules become invisible in the PNG
            "diffusion.prediction": "v_prediction",
        },
    )
    model = wb.build_model(cfg)
    randomize_head(model)
    save_checkpoint(Checkpoint(cfg, 0, model.state_dict(), model.state_dict()), tmp_path / "run")
    base = ["sample", "--checkpoint", str(tmp_path / "run"), "--num-images", "2", "--steps", "2", "--seed", "1"]
    grids = {}
    for name, extra in {
        "own": [],
        "D3": ["--diffusion-depth", "3"],
        "Dk": ["--depth-schedule", "3,2,1,1"],
        "Sk": ["--steps-schedule", "2,2,1,1"],
        "Di": ["--depth-per-step", "1,3"],
    }.items():
        assert run([*base, *extra, "--out", str(tmp_path / f"{name}.png")]) == 0, name
        grids[name] = list(Image.open(tmp_path / f"{name}.png").get_flattened_data())
    assert [n for n in ("D3", "Dk", "Sk", "Di") if grids[n] == grids["own"]] == []  # each argument reached the sampler
    capsys.readouterr()
    assert run([*base, "--depth-schedule", "3,2"]) == 1
    assert "sample.depth_schedule" in capsys.readouterr().err
    assert run([*base, "--diffusion-depth", "4"]) == 1
    assert "allow_untrained_depth" in capsys.readouterr().err
    assert run([*base, "--diffusion-depth", "4", "--allow-untrained-depth", "--out", str(tmp_path / "x.png")]) == 0
    out = tmp_path / "report.json"
    assert (
        run(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "run"),
                "--num-samples",
                "10",
                "--steps",
                "2",
                "--depth-schedule",
                "3,2,1,1",
                "--no-flop-count",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["depths"] == [3, 2, 1, 1] and report["untrained_depth"] is False


def refused_option(tmp_path, capsys, cfg, *option: str) -> str:
    """`sample` with `option` on an untrained checkpoint of `cfg` must fail (exit 1); returns what it printed."""
    save_checkpoint(Checkpoint(cfg, 0, wb.build_model(cfg).state_dict(), None), tmp_path / "refused")
    capsys.readouterr()
    assert run(["sample", "--checkpoint", str(tmp_path / "refused"), *option, "--out", str(tmp_path / "r.png")]) == 1
    return capsys.readouterr().err


def test_cfg_scale_reaches_the_sampler_and_the_report_and_is_refused_for_unconditional_models(tmp_path, capsys):
    """--cfg-scale guides a class-conditional checkpoint (a different grid from the unguided one); eval records the
    guidance and how labels were drawn; an unconditional checkpoint refuses guidance naming the fix."""
    small = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1}
    cfg = wb.preset("tiny", **small, **{"model.num_classes": 3, "sample.class_counts": (2, 0, 1)})
    model = wb.build_model(cfg)
    randomize_head(model)
    save_checkpoint(Checkpoint(cfg, 0, model.state_dict(), model.state_dict()), tmp_path / "cond")
    base = ["sample", "--checkpoint", str(tmp_path / "cond"), "--num-images", "2", "--steps", "2", "--seed", "1"]
    grids = {}
    for w in ("1", "4"):
        assert run([*base, "--cfg-scale", w, "--out", str(tmp_path / f"w{w}.png")]) == 0
        grids[w] = list(Image.open(tmp_path / f"w{w}.png").get_flattened_data())
    assert grids["1"] != grids["4"]
    out = tmp_path / "report.json"
    assert (
        run(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "cond"),
                "--num-samples",
                "10",
                "--steps",
                "2",
                "--cfg-scale",
                "2.5",
                "--no-flop-count",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["guidance"] == {
        "cfg_scale": 2.5,
        "labels": "drawn in the training set's class proportions",
    }
    err = refused_option(tmp_path, capsys, wb.preset("tiny", **small), "--cfg-scale", "2")
    assert "guidance needs a class-conditional model" in err and "Fix: use cfg_scale=1" in err


def test_flow_shift_reaches_the_schedule_and_the_report_and_is_refused_for_epsilon_models(tmp_path, capsys):
    """--flow-shift changes a flow model's samples (a shifted schedule) and equals training with that shift in the
    config; eval records it; an epsilon model refuses it naming the fix."""
    small = {"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1}
    cfg = wb.preset("tiny", **small, **{"diffusion.prediction": "flow", "sample.sampler": "euler"})
    model = wb.build_model(cfg)
    randomize_head(model)
    save_checkpoint(Checkpoint(cfg, 0, model.state_dict(), model.state_dict()), tmp_path / "flow")
    shifted = cfg.override(**{"sample.flow_shift": 3.0})
    save_checkpoint(Checkpoint(shifted, 0, model.state_dict(), model.state_dict()), tmp_path / "flow3")
    base = ["sample", "--num-images", "2", "--steps", "3", "--seed", "1"]
    grids = {}
    for name, extra in (
        ("k1", ["--checkpoint", str(tmp_path / "flow")]),
        ("k3", ["--checkpoint", str(tmp_path / "flow"), "--flow-shift", "3"]),
        ("cfg3", ["--checkpoint", str(tmp_path / "flow3")]),
    ):
        assert run([*base, *extra, "--out", str(tmp_path / f"{name}.png")]) == 0
        grids[name] = list(Image.open(tmp_path / f"{name}.png").get_flattened_data())
    assert grids["k1"] != grids["k3"] and grids["k3"] == grids["cfg3"]
    out = tmp_path / "report.json"
    assert (
        run(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "flow"),
                "--num-samples",
                "10",
                "--steps",
                "2",
                "--flow-shift",
                "2.5",
                "--no-flop-count",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["flow_shift"] == 2.5
    assert (
        run(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "flow"),
                "--num-samples",
                "10",
                "--steps",
                "2",
                "--context-noise",
                "0.2",
                "--no-flop-count",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["context_noise"] == 0.2
    err = refused_option(tmp_path, capsys, wb.preset("tiny", **small), "--flow-shift", "3")
    assert "only a flow model's sampling schedule has a time shift" in err and "Fix: omit --flow-shift" in err
    assert (
        run(["sample", "--checkpoint", str(tmp_path / "flow"), "--flow-shift", "0", "--out", str(tmp_path / "z.png")])
        == 1
    )
    assert "sample.flow_shift" in capsys.readouterr().err


def test_eval_scores_a_256px_latent_model_with_inception_against_every_fluent_image(tmp_path, monkeypatch, capsys):
    """A 256 px latent model (tiny codec, synthetic Fluent package): scripts/build_reference.py computes the Fluent
    reference over every image (train and held out) with its card, and `eval` finds it by default and scores the
    decoded 256x256 samples with Inception against it, recording its provenance."""
    import importlib.util
    import math
    from pathlib import Path

    from fluent_fixture import NAMES, write_fluent, write_tiny_codec

    from workbench.evaluation import evaluate as evaluation
    from workbench.evaluation import metrics

    fluent, codec = write_fluent(tmp_path / "fluent"), write_tiny_codec(tmp_path / "codec")
    refs = tmp_path / "reference"
    monkeypatch.setattr(evaluation, "REFERENCE_DIR", refs)  # where eval looks, instead of data/reference/
    monkeypatch.setattr(metrics, "FEATURE_LOG_DIR", tmp_path / "features")
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_reference.py"
    spec = importlib.util.spec_from_file_location("build_reference", script)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.main(["--root", str(fluent), "--out", str(refs), "--threads", "1"]) == 0
    name = f"fluent-256px-all-inception-{len(NAMES)}"
    card = json.loads((refs / f"{name}.json").read_text())
    assert card["count"] == len(NAMES) and card["split"] == "all" and card["extractor"] == "inception"
    assert card["dataset_identity"]["split"] == "all" and "@lobehub/fluent-emoji-3d@1.1.0" in card["dataset_transform"]
    assert f"| `{name}` | {card['extractor_id']} | {len(NAMES)} (all: train and held out) |" in capsys.readouterr().out
    cfg = wb.preset(
        "emoji256-T4",
        **{
            "model.width": 32,
            "model.heads": 2,
            "model.depth": 2,
            "model.diffusion_depth": 1,
            "data.root": str(fluent),
            "data.vae_path": str(codec),
        },
    )
    model = wb.build_model(cfg)
    randomize_head(model)
    save_checkpoint(Checkpoint(cfg, 5, model.state_dict(), model.state_dict()), tmp_path / "run")
    out = tmp_path / "report.json"
    assert (
        run(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "run"),
                "--num-samples",
                "10",
                "--steps",
                "1",
                "--no-flop-count",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["extractor"] == card["extractor_id"] and report["reference"] == name
    assert report["reference_count"] == len(NAMES) and report["n"] == 10 and math.isfinite(report["fid"])
    assert {k: report["reference_card"][k] for k in ("dataset", "split", "image_size")} == {
        "dataset": "fluent",
        "split": "all",
        "image_size": 256,
    }
    assert report["data"] == {"dataset": "fluent", "image_size": 256} and report["model"]["T"] == 4


# ---- bad paths: every path option and every file read, refused before any work -----------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    """A small checkpoint and one of each kind of bad file or folder the path options may be given."""
    base = tmp_path_factory.mktemp("paths")
    cfg = wb.preset("tiny", **{"model.width": 32, "model.heads": 2, "model.depth": 2, "model.diffusion_depth": 1})
    save_checkpoint(Checkpoint(cfg, 0, wb.build_model(cfg).state_dict(), None), base / "run")
    (base / "folder").mkdir()
    (base / "folder.png").mkdir()
    (base / "file.txt").write_text("text\n")
    os.mkfifo(base / "fifo")
    os.mkfifo(base / "fifo.png")
    (base / "indent.yaml").write_text("model:\n  depth: 4\n   width: 8\n")  # line 3 is indented one space more
    (base / "bracket.yaml").write_text("train: {lr: 0.01}\nmodel: {elastic_depths: [1, 2\n")
    (base / "binary.yaml").write_bytes(b"model: \xff\xfe\x00")
    (base / "typo.yaml").write_text("model: {dept: 3}\n")
    (base / "huge.yaml").write_text("# padding\n" * 200_000)  # 2 MB
    (base / "link.yaml").symlink_to(base / "gone.yaml")
    return {"base": str(base), "run": str(base / "run")}


# (argv with {base} and {run} to fill in, what the one line must say); each is refused before any work starts
BAD_PATHS = {
    "sample --out in /proc": (["sample", "--checkpoint", "{run}", "--out", "/proc/x.png"], "/proc/x.png: cannot write"),
    "sample --out a folder": (["sample", "--checkpoint", "{run}", "--out", "{base}/folder.png"], "is a folder"),
    "sample --out under a file": (
        ["sample", "--checkpoint", "{run}", "--out", "{base}/file.txt/x.png"],
        "not a folder",
    ),
    "sample --out no image suffix": (["sample", "--checkpoint", "{run}", "--out", "{base}/grid"], "must end in .png"),
    "sample --out a FIFO": (["sample", "--checkpoint", "{run}", "--out", "{base}/fifo.png"], "not a regular file"),
    "sample --frames in /proc": (["sample", "--checkpoint", "{run}", "--frames", "/proc/frames"], "cannot write"),
    "sample --frames a file": (["sample", "--checkpoint", "{run}", "--frames", "{base}/file.txt"], "not a folder"),
    "sample --checkpoint missing": (["sample", "--checkpoint", "{base}/nope"], "no such file or folder"),
    "sample --checkpoint a FIFO": (["sample", "--checkpoint", "{base}/fifo"], "not a regular file"),
    "sample --checkpoint a device": (["sample", "--checkpoint", "/dev/zero"], "not a regular file"),
    "eval --out in /proc": (["eval", "--checkpoint", "{run}", "--out", "/proc/r.json"], "/proc/r.json: cannot write"),
    "eval --out a folder": (["eval", "--checkpoint", "{run}", "--out", "{base}/folder"], "is a folder"),
    "eval --reference missing": (["eval", "--checkpoint", "{run}", "--reference", "{base}/nope.npz"], "no such"),
    "eval --reference a folder": (["eval", "--checkpoint", "{run}", "--reference", "{base}/folder"], "is a folder"),
    "eval --reference a FIFO": (["eval", "--checkpoint", "{run}", "--reference", "{base}/fifo"], "not a regular"),
    "eval --checkpoint a device": (["eval", "--checkpoint", "/dev/zero"], "not a regular file"),
    "train --config malformed": (["train", "--config", "{base}/indent.yaml"], "indent.yaml: line 3, column 9"),
    "train --config unclosed": (["train", "--config", "{base}/bracket.yaml"], "bracket.yaml: line 3, column 1"),
    "train --config not UTF-8": (["train", "--config", "{base}/binary.yaml"], "binary.yaml: not UTF-8"),
    "train --config bad field": (["train", "--config", "{base}/typo.yaml"], "typo.yaml: model.dept"),
    "train --config too big": (["train", "--config", "{base}/huge.yaml"], "more than any YAML file"),
    "train --config a folder": (["train", "--config", "{base}/folder"], "is a folder"),
    "train --config a FIFO": (["train", "--config", "{base}/fifo"], "not a regular file"),
    "train --config a device": (["train", "--config", "/dev/zero"], "not a regular file"),
    "train --config dangling link": (["train", "--config", "{base}/link.yaml"], "gone.yaml, which does not exist"),
    "train data.root missing": (["train", "--data.root", "{base}/nope"], "data.root: no such file or folder"),
    "train data.root a FIFO": (["train", "--data.root", "{base}/fifo"], "data.root: {base}/fifo is not a regular"),
    "launch --script in /proc": (["launch", "--preset", "tiny", "--script", "/proc/x.sh"], "/proc/x.sh: cannot write"),
    "train out_dir in /proc": (["train", "--train.out_dir", "/proc/run"], "train.out_dir: /proc/run: cannot write"),
    "train out_dir a file": (["train", "--train.out_dir", "{base}/file.txt"], "is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_bad_paths_are_refused_in_one_line_before_any_work(case, bad_files, capsys, monkeypatch):
    """Outputs are checked before sampling, scoring or training starts (so no work is lost to an unwritable path),
    inputs before they are read (a FIFO or a device would block or never end); one line names the path and the fix;
    the probe that tests an output folder leaves nothing behind."""
    import workbench.__main__ as cli
    import workbench.evaluation.sharded as sharded
    import workbench.training.train as training

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the paths were checked")

    for module, name in [(cli, "load_for_inference"), (sharded, "evaluate_sharded"), (training, "train")]:
        monkeypatch.setattr(module, name, no_work)
    argv, says = BAD_PATHS[case]
    before = sorted(os.listdir(bad_files["base"]))
    code = run([a.format(**bad_files) for a in argv])
    err = capsys.readouterr().err
    assert code in (1, 2) and says.format(**bad_files) in err and "Fix:" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(os.listdir(bad_files["base"])) == before  # no probe file, no half-written output


def test_eval_refuses_an_unwritable_current_folder_before_scoring(bad_files, capsys, monkeypatch):
    """Without --out the report goes to the current folder: it is checked before the evaluation, not after."""
    import workbench.evaluation.sharded as sharded

    monkeypatch.setattr(sharded, "evaluate_sharded", lambda *a, **k: pytest.fail("scored before the check"))
    monkeypatch.chdir("/proc")  # even root cannot create a file here
    assert run(["eval", "--checkpoint", bad_files["run"]]) == 1
    err = capsys.readouterr().err
    assert "eval's report" in err and "cannot write in /proc" in err and "Fix:" in err


def test_good_output_paths_still_work_and_missing_folders_are_created(bad_files, tmp_path):
    out, frames = tmp_path / "new" / "deeper" / "grid.png", tmp_path / "more" / "frames"
    argv = ["sample", "--checkpoint", bad_files["run"], "--num-images", "1", "--steps", "1", "--sampler", "ddim"]
    assert run([*argv, "--out", str(out), "--frames", str(frames)]) == 0
    assert Image.open(out).size == (32 + 2 * 2, 32 + 2 * 2) and len(list(frames.iterdir())) == 4  # 2-pixel gutters
    assert not [p for p in tmp_path.rglob(".workbench-probe-*")]
