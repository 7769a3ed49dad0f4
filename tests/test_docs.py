"""The README is a front page and the docs hold together: the README stays short, every relative link in it and in
docs/ reaches a file of the repository (and a heading, where it names one), the config fields the pages name
exist, and nothing cites background files the repository does not contain."""

import re
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from workbench.core.config import Config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the pages whose config-field names are checked: the front page and the docs this test's author keeps
FIELD_PAGES = [ROOT / "README.md"] + [
    ROOT / "docs" / f"{name}.md" for name in ("index", "method", "architecture", "training", "results")
]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())  # a code block shows text, it does not link
    found = LINK.findall(text) + re.findall(r'<img [^>]*src="([^"]+)"', text)
    return [t for t in found if not re.match(r"[a-z]+:", t)]  # http:, https:, mailto:


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move detail into docs/"
    setup = next(i for i, line in enumerate(lines) if "make app" in line)
    assert setup < 30 and any("make test" in line for line in lines[setup : setup + 3])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file() or ROOT not in file.parents:
            broken.append(f"{target}: no such file in the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, broken


@pytest.mark.parametrize("page", FIELD_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_config_fields_a_page_names_exist(page):
    defaults = Config()
    known = {
        f"{s.name}.{f.name}" for s in fields(Config) if s.name != "name" for f in fields(getattr(defaults, s.name))
    }
    # `section.field` in text and --section.field options in commands
    named = set(re.findall(r"(?:`|--)((?:model|diffusion|data|train|sample)\.[a-z_0-9]+)", page.read_text()))
    named = {n for n in named if not n.endswith(".py")}  # `diffusion.py`, `train.py`: modules, not fields
    assert not named - known, sorted(named - known)


def test_nothing_cites_background_files_the_repository_lacks():
    names = [f"{stem}.md" for stem in ("PAPER", "DESIGN", "STYLE")]  # spelled apart so that this file is no hit
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    cited = []
    for rel in tracked.splitlines():
        path = ROOT / rel
        if path.suffix in (".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", ".txt") and path.is_file():
            text = path.read_text(errors="replace")
            cited += [f"{rel}: {n}" for n in names if n in text and not (ROOT / n).exists()]
    assert not cited, cited
