"""The house rules a reader relies on: the sub-packages form layers that import only downward, modules import at
the top (function-level imports only for optional heavy dependencies), modules stay short, functions take at most
8 parameters, every package says what it owns, and the app's catalogue does not pull in Lightning."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
# the layers, bottom first: a package may import only the packages before it
LAYERS = ("core", "data", "sampling", "training", "evaluation", "research", "ui")
# (module, imported name): the function-level imports allowed, each an optional heavy dependency
LAZY_ALLOWED = {
    ("__main__", "training"),
    ("__main__", "research"),
    ("__main__", "evaluation"),  # eval's sharded path launches Lightning Fabric
    ("data.codecs", "diffusers"),
}
MAX_LINES = 600  # "about 400" before the formatter, which spreads long calls over more lines
MAX_PARAMETERS = 8


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The dotted workbench module a relative `from ... import` names (without the `workbench.` prefix)."""
    base = module.split(".")[: -node.level]  # "training.train" and "training.__init__" both sit in training
    return ".".join(base + ([node.module] if node.module else []))


def internal_imports(module: str, tree: ast.Module) -> set[str]:
    """The workbench modules a module imports at its top level."""
    return {resolve(module, node) for node in tree.body if isinstance(node, ast.ImportFrom) and node.level >= 1}


def package_of(module: str) -> str:
    return module.split(".")[0] if "." in module else ""


def test_imports_form_a_dag_that_runs_downward():
    graph = {name: internal_imports(name, tree) for name, tree in modules().items()}
    unknown = {(m, d) for m, deps in graph.items() for d in deps if d not in graph and f"{d}.__init__" not in graph}
    assert not unknown, unknown
    order, state = [], {}

    def visit(m, path):
        if state.get(m) == "done" or m not in graph:
            return
        assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = "done"
        order.append(m)

    for m in sorted(graph):
        visit(m, [])
    upward = set()
    for m, deps in graph.items():
        if package_of(m) not in LAYERS:
            continue
        allowed = set(LAYERS[: LAYERS.index(package_of(m)) + 1])
        upward |= {(m, d) for d in deps if package_of(d) in LAYERS and package_of(d) not in allowed}
    assert not upward, f"imports that climb up the layers: {sorted(upward)}"
    # only the research layer's two trainers (live members, the zoo's driver) import the loop (Lightning); the CLI
    # imports them lazily
    importers_of_train = {m for m, deps in graph.items() if "training.train" in deps}
    assert importers_of_train <= {"research.live", "research.zoo"}, importers_of_train


def test_every_package_says_what_it_owns_and_may_import():
    for name in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())) or ""
        assert len(doc.split()) >= 20 and "import" in doc.lower(), (
            f"workbench/{name}/__init__.py: no docstring of its scope"
        )
    found = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert found == set(LAYERS), found


def test_no_function_level_imports_except_heavy_optional_ones():
    found = set()
    for name, tree in modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom):
                        target = resolve(name, node) if node.level else node.module or ""
                        found.add((name, target.split(".")[0]))
                    elif isinstance(node, ast.Import):
                        found |= {(name, a.name.split(".")[0]) for a in node.names}
    assert found <= LAZY_ALLOWED, found - LAZY_ALLOWED


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_short(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_functions_take_at_most_eight_parameters():
    wide = []
    for name, tree in modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = fn.args
                params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
                count = len(params) + (a.vararg is not None) + (a.kwarg is not None)
                if count > MAX_PARAMETERS:
                    wide.append(f"{name}.{fn.name}: {count}")
    assert not wide, wide


def test_the_app_catalogue_does_not_import_lightning():
    code = (
        "import sys; import app.catalog, app.panels, app.controls; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'lightning_fabric', "
        "'pytorch_lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
