"""Render each notebook, executed, as Markdown with static PNG figures, so that a reader on a code host sees every
table and figure without running anything:

    python scripts/render_notebooks.py            # every notebook, full mode (the shipped zoo's numbers)
    python scripts/render_notebooks.py 02 04      # some notebooks
    python scripts/render_notebooks.py --check    # exit 1 when a rendered copy is older than its notebook

Each notebook runs top to bottom in a fresh kernel (nbclient, full mode unless --fast); its cells become
docs/notebooks/<name>.md: Markdown cells as they are, code in fences, text and Markdown outputs inline, each plotly
figure a PNG (plotly's kaleido with the system Chromium) in docs/notebooks/<name>/. Widgets are interactive only:
the copy says where they sit. The first line records a digest of the notebook's cells (its sources, not its run-time
line), which tests/test_notebooks.py compares with the notebook: a notebook changed and not rendered again fails.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"
RUN_TIME_PREFIX = "# Run time on "  # scripts/time_notebooks.py's line: measuring again does not change a figure
DIGEST_PREFIX = "<!-- rendered by scripts/render_notebooks.py from notebooks/"
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
FIGURE_SIZE = (900, 500)  # pixels of a figure PNG without its own height


def source_digest(path: Path) -> str:
    """sha256 of the notebook's cells (type and source), its run-time line left out."""
    nb = json.loads(Path(path).read_text())
    cells = []
    for cell in nb["cells"]:
        lines = "".join(cell["source"]).splitlines()
        cells.append([cell["cell_type"], [s for s in lines if not s.startswith(RUN_TIME_PREFIX)]])
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def recorded_digest(md: Path) -> str | None:
    """The digest a rendered copy was made from (None: no copy, or no digest line)."""
    if not md.is_file():
        return None
    first = md.read_text().split("\n", 1)[0]
    return first.split("sha256 ", 1)[1].split(" ", 1)[0] if first.startswith(DIGEST_PREFIX) else None


def execute(path: Path, fast: bool, timeout: int):
    """The notebook executed in a fresh kernel in notebooks/ (plotly figures as their JSON, for the PNGs)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["WORKBENCH_FAST"] = "1" if fast else "0"  # the kernel inherits this process's environment
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def _figure_png(spec: dict, dest: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure(spec)
    height = fig.layout.height or FIGURE_SIZE[1]
    dest.write_bytes(fig.to_image(format="png", width=FIGURE_SIZE[0], height=height))


def _outputs(cell, figures: Path, name: str, counter: list[int]) -> list[str]:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append("```text\n" + "".join(out["text"]).rstrip() + "\n```")
            continue
        if out["output_type"] == "error":
            raise RuntimeError(f"{name}: a cell failed ({out['ename']}). Fix: run the notebook and repair it first.")
        data = out.get("data", {})
        if PLOTLY in data or "image/png" in data:
            counter[0] += 1
            dest = figures / f"figure-{counter[0]:02d}.png"
            if PLOTLY in data:
                _figure_png(data[PLOTLY], dest)
            else:
                dest.write_bytes(base64.b64decode(data["image/png"]))
            parts.append(f"![figure {counter[0]}]({name}/{dest.name})")
        elif WIDGET in data:
            parts.append("> _An interactive widget sits here: open the notebook in JupyterLab (`make lab`) to use it._")
        elif "text/markdown" in data:
            parts.append("".join(data["text/markdown"]).rstrip())
        elif "text/plain" in data:
            parts.append("```text\n" + "".join(data["text/plain"]).rstrip() + "\n```")
    return parts


def render(path: Path, fast: bool, timeout: int) -> Path:
    """Execute `path` and write docs/notebooks/<name>.md and its figures (replacing the previous copy)."""
    nb = execute(path, fast, timeout)
    name = path.stem
    tmp = Path(tempfile.mkdtemp(prefix=f"render-{name}-", dir=OUT))
    figures = tmp / name
    figures.mkdir()
    counter = [0]
    mode = "FAST" if fast else "full"
    parts = [
        f"{DIGEST_PREFIX}{path.name}, sha256 {source_digest(path)} ({mode} mode) -->",
        f"_Rendered from [`notebooks/{path.name}`](../../notebooks/{path.name}), run top to bottom in {mode} mode"
        " by `python scripts/render_notebooks.py`; figures are static PNGs of the interactive plotly figures._",
    ]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.cell_type == "code":
            parts.append("```python\n" + cell.source.rstrip() + "\n```")
            parts += _outputs(cell, figures, name, counter)
    # paths of this checkout read as paths of the repository: the copy must not name the machine it was made on
    text = "\n\n".join(parts).replace(f"{ROOT}/", "")
    (tmp / f"{name}.md").write_text(text + "\n")
    # replace the old copy only now, whole: a failed run leaves the previous one in place
    shutil.rmtree(OUT / name, ignore_errors=True)
    (figures).rename(OUT / name)
    (tmp / f"{name}.md").replace(OUT / f"{name}.md")
    shutil.rmtree(tmp, ignore_errors=True)
    return OUT / f"{name}.md"


def stale(paths: list[Path]) -> list[str]:
    """The notebooks whose rendered copy is missing or was made from other cells."""
    return [p.name for p in paths if recorded_digest(OUT / f"{p.stem}.md") != source_digest(p)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="notebook name prefixes (default: all)")
    ap.add_argument("--fast", action="store_true", help="render the FAST run (default: full mode)")
    ap.add_argument("--check", action="store_true", help="only say which rendered copies are out of date")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not args.only or p.stem.startswith(tuple(args.only))]
    if not paths:
        sys.exit(f"no notebook matches {args.only}. Fix: give prefixes such as 02 or 04_ablations.")
    if args.check:
        old = stale(paths)
        print("\n".join(f"{n}: rendered copy out of date" for n in old) or "every rendered copy is current")
        return 1 if old else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path in paths:
        print(f"{render(path, args.fast, args.timeout).relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
