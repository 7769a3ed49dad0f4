"""The house rules of STYLE.md/DESIGN.md that a reader relies on: imports run downward (no cycles), modules are
imported at the top (function-level imports only for optional heavy dependencies), modules stay short, and the
app's catalogue does not pull in Lightning."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
# (module, imported name): the function-level imports allowed, each an optional heavy dependency
LAZY_ALLOWED = {("__main__", "train"), ("codecs", "diffusers")}
MAX_LINES = 440  # "about 400"


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def internal_imports(tree: ast.Module) -> set[str]:
    """The workbench modules a module imports at its top level."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.add(node.module or "")
    return out


def test_imports_form_a_dag_that_runs_downward():
    graph = {name: internal_imports(tree) for name, tree in modules().items()}
    unknown = {(m, d) for m, deps in graph.items() for d in deps if d not in graph}
    assert not unknown, unknown
    order, state = [], {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = "done"
        order.append(m)

    for m in sorted(graph):
        visit(m, [])
    # the layering of DESIGN.md: only the live-experiments layer and the CLI train; the core never reaches up
    importers_of_train = {m for m, deps in graph.items() if "train" in deps}
    assert importers_of_train <= {"experiments"}, importers_of_train
    for low in ("config", "layers", "blocks", "model", "diffusion", "flow", "codecs", "compute", "sampling"):
        assert not graph[low] & {"train", "evaluation", "experiments", "reports", "plots", "comparison", "paper"}, low


def test_no_function_level_imports_except_heavy_optional_ones():
    found = set()
    for name, tree in modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom):
                        found.add((name, (node.module or "").split(".")[0]))
                    elif isinstance(node, ast.Import):
                        found |= {(name, a.name.split(".")[0]) for a in node.names}
    assert found <= LAZY_ALLOWED, found - LAZY_ALLOWED


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_modules_stay_short(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_app_catalogue_does_not_import_lightning():
    code = ("import sys; import app.catalog, app.panels, app.controls; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'lightning_fabric', "
            "'pytorch_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
