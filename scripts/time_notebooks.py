"""Measure each notebook's run time in FAST and in full mode, and state them in its first cell.

    python scripts/time_notebooks.py                      # every notebook, both modes, then rewrite the first cells
    python scripts/time_notebooks.py --modes fast 02 04   # some notebooks, one mode (the other keeps its record)
    python scripts/time_notebooks.py --write-only         # rewrite the first cells from the recorded times

Each run executes the notebook top to bottom in a fresh kernel (nbclient, outputs discarded) with WORKBENCH_FAST set
for the mode, one notebook at a time; the machine (cores, CPU) is recorded beside the times in
benchmarks/results/notebook_times.json. The first cell's line "# Run time on ..." is replaced (or added at its end);
nothing else in the notebook changes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RECORD = ROOT / "benchmarks" / "results" / "notebook_times.json"
PREFIX = "# Run time on "


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(path: Path, fast: bool, timeout: int) -> float:
    """Seconds to execute `path` in a fresh kernel (FAST or full mode); an error in a cell stops with it."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["WORKBENCH_FAST"] = "1" if fast else "0"  # the kernel inherits this process's environment
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return time.perf_counter() - t0


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def statement(times: dict, machine: dict) -> str:
    parts = [f"{mode} {_minutes(times[mode])}" for mode in ("FAST", "full") if mode in times]
    return f"{PREFIX}{machine['cores']} cores ({machine['cpu']}): " + ", ".join(parts) + " (scripts/time_notebooks.py)"


def write_first_cell(path: Path, line: str) -> None:
    """Replace the first cell's run-time line with `line` (or append it), keeping the rest of the file as it is."""
    nb = json.loads(path.read_text())
    src = "".join(nb["cells"][0]["source"]).splitlines()
    src = [s for s in src if not s.startswith(PREFIX)] + [line]
    nb["cells"][0]["source"] = [s + "\n" for s in src[:-1]] + [src[-1]]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="notebook name prefixes (default: all)")
    ap.add_argument("--modes", default="fast,full", help="comma-separated: fast, full")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--write-only", action="store_true", help="rewrite the first cells from the record")
    args = ap.parse_args(argv)
    paths = [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not args.only or p.stem.startswith(tuple(args.only))]
    if not paths:
        sys.exit(f"no notebook matches {args.only}. Fix: give prefixes such as 02 or 04_ablations.")
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    machine = {"cores": os.cpu_count(), "cpu": cpu_name()}
    if not args.write_only:
        for path in paths:
            for mode in args.modes.split(","):
                if mode not in ("fast", "full"):
                    sys.exit(f"--modes: unknown mode {mode!r}. Fix: use fast, full or fast,full.")
                seconds = run(path, mode == "fast", args.timeout)
                entry = record.setdefault(path.stem, {})
                entry[mode.upper() if mode == "fast" else "full"] = round(seconds, 1)
                entry["machine"] = machine
                entry["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                print(f"{path.stem} {mode}: {_minutes(seconds)}", flush=True)
                RECORD.parent.mkdir(parents=True, exist_ok=True)
                RECORD.write_text(json.dumps(record, indent=1) + "\n")
    for path in paths:
        entry = record.get(path.stem)
        if entry:
            write_first_cell(path, statement(entry, entry["machine"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
