"""The notebooks: their shape (a `parameters` cell with the FAST switch, no outputs committed, no computation
defined in them, a conclusion computed from the measured numbers) and a run of each under nbmake in FAST mode, so
that `make test` executes them as CI does (`pytest --nbmake notebooks/`)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_quickstart", "02_vertical_mixing", "03_block_partitioning", "04_ablations", "05_scaling_up"]
FAST_SWITCH = 'FAST = os.environ.get("WORKBENCH_FAST", "0") == "1"'


def test_the_five_experiments_have_notebooks():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert FAST_SWITCH in first.source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines()), (
        "notebooks narrate, the package computes: move functions to workbench/"
    )
    assert any(c.source.lstrip().startswith("# ") and c.cell_type == "markdown" for c in nb.cells)
    last = nb.cells[-1]
    assert last.cell_type == "code" and "Markdown(" in last.source, "end with a conclusion written from the numbers"
    assert nb.cells[-2].cell_type == "markdown" and "Conclusion" in nb.cells[-2].source


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path):
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider", str(path)],
        cwd=ROOT,
        env={**os.environ, "WORKBENCH_FAST": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    print(f"{path.name}: {time.perf_counter() - start:.0f} s under nbmake (FAST)")


RETRAINED = ["02_vertical_mixing", "03_block_partitioning", "04_ablations"]  # the notebooks with a RETRAIN switch


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", RETRAINED)
def test_retrain_switch_sits_in_the_parameters_cell(name):
    first = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells[0].source
    assert 'RETRAIN = os.environ.get("WORKBENCH_RETRAIN", "0") == "1"' in first
    assert "RETRAIN_STEPS = " in first and "RETRAIN_N = " in first


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", RETRAINED)
def test_notebook_retrains_its_family_in_fast_mode(name):
    """The RETRAIN path under nbmake: tiny members trained and scored now, every table and figure drawn from them."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider", f"notebooks/{name}.ipynb"],
        cwd=ROOT,
        env={**os.environ, "WORKBENCH_FAST": "1", "WORKBENCH_RETRAIN": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    print(f"{name}: {time.perf_counter() - start:.0f} s under nbmake (FAST, RETRAIN)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_rendered_copy_is_current(path):
    render = load_script("render_notebooks")
    md = render.OUT / f"{path.stem}.md"
    assert render.recorded_digest(md) == render.source_digest(path), (
        f"docs/notebooks/{path.stem}.md was rendered from other cells than {path.name}. Fix: python "
        f"scripts/render_notebooks.py {path.stem[:2]}"
    )
    for ref in re.findall(r"\]\(([^)]+\.png)\)", md.read_text()):
        assert (md.parent / ref).is_file(), f"{md.name} shows {ref}, which is missing"


def test_rendered_digest_ignores_only_the_run_time_line(tmp_path):
    render = load_script("render_notebooks")
    path = tmp_path / "nb.ipynb"
    path.write_text(NOTEBOOKS[1].read_text())
    before = render.source_digest(path)
    tn = load_script("time_notebooks")
    tn.write_first_cell(path, tn.statement({"FAST": 1.0}, {"cores": 2, "cpu": "another CPU"}))
    assert render.source_digest(path) == before  # measuring the run time again needs no new rendering
    nb = nbformat.read(path, as_version=4)
    nb.cells[3].source += " "
    nbformat.write(nb, path)
    assert render.source_digest(path) != before  # any other edit does


def test_make_lab_opens_jupyterlab_on_the_notebooks_with_this_venv():
    done = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ".venv/bin/jupyter lab --notebook-dir=notebooks" in done.stdout
    assert (Path(sys.executable).parent / "jupyter-lab").is_file() or (ROOT / ".venv" / "bin" / "jupyter-lab").is_file()


def test_run_time_statement_replaces_only_its_line(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("time_notebooks", ROOT / "scripts" / "time_notebooks.py")
    tn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tn)
    nb = nbformat.read(NOTEBOOKS[1], as_version=4)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    machine = {"cores": 2, "cpu": "AMD EPYC"}
    line = tn.statement({"FAST": 41.2, "full": 300.0}, machine)
    assert line == "# Run time on 2 cores (AMD EPYC): FAST 41 s, full 5.0 min (scripts/time_notebooks.py)"
    tn.write_first_cell(path, line)
    tn.write_first_cell(path, tn.statement({"FAST": 12.0}, machine))  # a second measurement replaces the first
    after = nbformat.read(path, as_version=4)
    first = after.cells[0].source.splitlines()
    assert first[:-1] == [s for s in nb.cells[0].source.splitlines() if not s.startswith(tn.PREFIX)]
    assert first[-1] == "# Run time on 2 cores (AMD EPYC): FAST 12 s (scripts/time_notebooks.py)"
    assert [c.source for c in after.cells[1:]] == [c.source for c in nb.cells[1:]]
