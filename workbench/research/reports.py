"""Evaluation reports of the zoo: the JSON schema (config, training budget, an FID curve over S) and its files.

A report (data/checkpoints/<family>/<name>.json) holds the member's config, its training budget and an FID curve:
one point per number of denoising steps S, with the FID, its bootstrap interval, KID, and the inference compute
per image both as the paper counts it, T[(N-D)+D*S], and as the cached sampler runs it.

Reports written by the zoo since the held-out FID and the copy share landed carry, in `eval`, the sections an eval
report has (workbench.evaluation.report.data_figures) at the report's headline point: `fid_held_out`,
`memorization_policy` and `memorization`, with `headline_point` saying which images they score (workbench.research.zoo.
headline_figures). Older reports lack them and load as before; `held_out_text` and `copy_share_text` say "-" there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.compute import sample_flops
from ..core.config import Config
from ..core.paths import ZOO_DIR
from .families import ABLATIONS, FAMILIES
from .replicates import split_seed

COSTS = {
    "steps": "denoising steps per block, S",
    "paper_cost": "block-layer evaluations per image, T[(N-D)+D*S] (paper)",
    "cached_cost": "block-layer evaluations per image, cached sampler",
    "flops": "FLOPs per image (analytic, compute.sample_flops; fair across T)",
}


@dataclass(frozen=True)
class CurvePoint:
    steps: int  # S: denoising steps per block
    fid: float
    fid_low: float  # bootstrap interval of the FID (NaN when the report has none)
    fid_high: float
    kid_mean: float
    kid_std: float
    paper_cost: float  # T[(N-D)+D*S] block-layer evaluations per image
    cached_cost: float  # block-layer evaluations the cached sampler runs per image
    seconds_per_image: float


REQUIRED_POINT = ("steps", "fid", "paper_cost", "cached_cost")


@dataclass(frozen=True)
class Report:
    family: str
    name: str
    config: Config
    training: dict  # steps, batch, images_seen, seconds, device, final_val_loss
    eval: dict  # extractor, reference, n, sampler, weights, seed (the curve is in `curve`)
    curve: tuple[CurvePoint, ...]  # sorted by steps
    path: Path | None = None

    @property
    def N(self) -> int:
        return self.config.model.depth

    @property
    def D(self) -> int:
        return self.config.model.diffusion_depth

    @property
    def T(self) -> int:
        return self.config.model.num_blocks

    @property
    def elastic(self) -> bool:
        """A report of an elastic model (one set of weights for every D), sampled at D."""
        return bool(self.config.model.elastic_depths)

    @property
    def label(self) -> str:
        return f"{self.family}/{self.name}"

    @property
    def member(self) -> str:
        """The zoo member the report scores: an elastic model's report at one D ("elastic-D3") is of "elastic"
        (zoo.depth_report_name's inverse); any other report is of its own name."""
        return re.sub(r"-D\d+$", "", self.name) if self.elastic else self.name

    @property
    def final(self) -> CurvePoint:
        """The point with the most denoising steps: the 'full sampling' condition of the paper's tables."""
        return self.curve[-1]

    def xs(self, x: str = "paper_cost") -> np.ndarray:
        if x not in COSTS:
            raise ValueError(f"x: unknown axis {x!r}. Fix: use one of {', '.join(COSTS)}.")
        if x == "flops":  # a block-layer evaluation costs more for bigger blocks: compare T on FLOPs
            return np.array([sum(sample_flops(self.config.model, p.steps).values()) for p in self.curve])
        return np.array([getattr(p, x) for p in self.curve], dtype=float)

    def ys(self, y: str = "fid") -> np.ndarray:
        return np.array([getattr(p, y) for p in self.curve], dtype=float)

    def points(self, x: str = "paper_cost") -> list[tuple[float, float]]:
        """(x, FID) pairs, the input of workbench.research.plots' curve figures."""
        return list(zip(self.xs(x).tolist(), self.ys().tolist()))

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "name": self.name,
            "config": self.config.to_dict(),
            "training": self.training,
            "eval": {**self.eval, "curve": [p.__dict__ for p in self.curve]},
        }


def report_from_dict(d: dict, path: Path | None = None) -> Report:
    """A Report from the JSON schema above; a missing field is an error naming the file and the field."""
    where = str(path) if path else "report"
    for key in ("family", "name", "config", "training", "eval"):
        if key not in d:
            raise ValueError(
                f"{where}: missing field {key!r}. Fix: write reports with python -m workbench zoo eval "
                "(schema: family, name, config, training, eval.curve)."
            )
    curve = d["eval"].get("curve") or []
    if not curve:
        raise ValueError(f"{where}: eval.curve is empty. Fix: evaluate at least one number of steps.")
    points = []
    for i, p in enumerate(curve):
        missing = [k for k in REQUIRED_POINT if k not in p]
        if missing:
            raise ValueError(f"{where}: eval.curve[{i}] lacks {missing}. Fix: every point needs {REQUIRED_POINT}.")
        points.append(
            CurvePoint(
                int(p["steps"]),
                *(
                    float(p.get(k, math.nan))
                    for k in (
                        "fid",
                        "fid_low",
                        "fid_high",
                        "kid_mean",
                        "kid_std",
                        "paper_cost",
                        "cached_cost",
                        "seconds_per_image",
                    )
                ),
            )
        )
    points.sort(key=lambda p: p.steps)
    if len({p.steps for p in points}) != len(points):
        raise ValueError(f"{where}: eval.curve repeats a number of steps. Fix: one point per S.")
    ev = {k: v for k, v in d["eval"].items() if k != "curve"}
    return Report(d["family"], d["name"], Config.from_dict(d["config"]), dict(d["training"]), ev, tuple(points), path)


def read_report(path: str | Path) -> Report:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}). Fix: re-run python -m workbench zoo eval for it.") from None
    return report_from_dict(d, path)


def write_report(report: Report, root: str | Path = ZOO_DIR) -> Path:
    """Write <root>/<family>/<name>.json."""
    path = Path(root) / report.family / f"{report.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return path


def _order(r: Report) -> tuple:
    ablations = [name for name, _ in ABLATIONS]
    base, seed = split_seed(r.name)
    return (
        r.D
        if r.family == "vertical"
        else r.T
        if r.family.startswith("blocks")
        else ablations.index(base)
        if base in ablations
        else len(ablations),
        seed,
        r.name,
    )


def load_reports(family: str, root: str | Path = ZOO_DIR) -> dict[str, Report]:
    """The reports of one family, keyed by member name, ordered by D (vertical), T (blocks) or the paper's
    ablation order; empty when the family has none yet."""
    folder = Path(root) / family
    reports = [read_report(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return {r.name: r for r in sorted(reports, key=_order)}


def weights_path(report: Report) -> Path | None:
    """The weights a report was measured on: <name>.safetensors beside it, or for an elastic model's report at
    one D ("elastic-D3") the elastic member's one file ("elastic.safetensors"), or for a member trained once with
    another (the same run) the file its report names in training["weights"], relative to the zoo folder; None when
    none ships (ablation replicates beyond the first seed ship reports alone)."""
    if report.path is None:
        return None
    candidates = [report.path.with_suffix(".safetensors")]
    shared = report.training.get("weights")  # a member trained once with another: "vertical/D2.safetensors"
    if shared:
        candidates.append(report.path.parent.parent / shared)
    if report.elastic:
        candidates.append(report.path.parent / f"{report.member}.safetensors")
    return next((c for c in candidates if c.is_file()), None)


def dedicated(reports: Mapping[str, Report]) -> dict[str, Report]:
    """The reports of models trained at one D (an elastic model's reports left out)."""
    return {k: r for k, r in reports.items() if not r.elastic}


def zoo_status(root: str | Path = ZOO_DIR) -> dict[str, int]:
    """Reports found per family."""
    return {f: len(list((Path(root) / f).glob("*.json"))) for f in FAMILIES}


def budget_table(reports: Mapping[str, Report]) -> list[dict]:
    """Provenance of each report: architecture, training budget and how its FID was measured."""
    return [
        {
            "member": r.label,
            "N": r.N,
            "D": r.D,
            "T": r.T,
            "train steps": r.training.get("steps"),
            "batch": r.training.get("batch"),
            "images seen": r.training.get("images_seen"),
            "train min": (r.training.get("seconds") or math.nan) / 60,
            "device": r.training.get("device"),
            "val loss": r.training.get("final_val_loss"),
            "FID extractor": r.eval.get("extractor"),
            "reference": r.eval.get("reference"),
            "n": r.eval.get("n"),
            "sampler": r.eval.get("sampler"),
            "S grid": ",".join(str(p.steps) for p in r.curve),
            "Inception FID": inception_text(r),
            "held-out FID": held_out_text(r),
            "copy share": copy_share_text(r),
        }
        for r in reports.values()
    ]


def inception_text(r: Report) -> str:
    """The Inception point a Fashion-MNIST report carries beside its classifier curve ("41.0 [39.6, 42.4] at S=16,
    FID-inf 34.1"), "-" without one."""
    p = r.eval.get("inception")
    if not p:
        return "-"
    inf = f", FID-inf {p['fid_inf']:.1f}" if p.get("fid_inf") is not None else ""
    return f"{p['fid']:.1f} [{p['fid_low']:.1f}, {p['fid_high']:.1f}] at S={p['steps']}{inf}"


def held_out_text(r: Report) -> str:
    """FID against the held-out split beside FID against the curve's reference, both at the report's headline point
    ("17.0 [16.1, 17.9] vs 17.1 [16.3, 17.8] (training) at S=16"; "(too few held-out images)" where the report's
    note says so), "-" in a report without them."""
    held, at = r.eval.get("fid_held_out") or {}, r.eval.get("headline_point") or {}
    if held.get("fid") is None or not at:
        return "-"
    small = " (too few held-out images)" if held.get("note") else ""
    return (
        f"{held['fid']:.1f} [{held['fid_low']:.1f}, {held['fid_high']:.1f}] vs {at['fid']:.1f} "
        f"[{at['fid_low']:.1f}, {at['fid_high']:.1f}] (reference) at S={at['steps']}{small}"
    )


def copy_share_text(r: Report) -> str:
    """The copy share with its interval and what new images would show ("11% [8%, 15%] of 200, new images 50%"),
    "-" in a report without one."""
    mem = r.eval.get("memorization") or {}
    if mem.get("copy_share") is None:
        return "-"
    low, high = mem["copy_share_interval"]
    return f"{mem['copy_share']:.0%} [{low:.0%}, {high:.0%}] of {mem['n']}, new images {mem['copy_share_if_novel']:.0%}"


def eval_rows(paths: Iterable[str | Path]) -> list[dict]:
    """One row per `workbench eval` JSON (python -m workbench eval --out FILE): the model's N, D, T, the sampling
    (S, sampler, weights, seed, n) and the score (FID with its interval, FID-infinity, KID, GFLOP per image),
    sorted by T then S. For scores of several models at one setting, beside the zoo's curves."""
    rows = []
    for path in map(Path, paths):
        e = json.loads(path.read_text())
        m = e["model"]
        rows.append(
            {
                "T": m["T"],
                "N": m["N"],
                "D": m["D"],
                "S": e["steps"],
                "n": e["n"],
                "sampler": e["sampler"],
                "weights": e["weights"],
                "seed": e["seed"],
                "FID": e["fid"],
                "FID low": e["fid_low"],
                "FID high": e["fid_high"],
                "FID inf": e["fid_inf"],
                "KID": e["kid_mean"],
                "GFLOP/image": e["cost"]["flops_analytic"] / 1e9,
                "extractor": e["extractor"],
                "reference": e["reference"],
                "model": e.get("name", ""),
                "file": path.name,
            }
        )
    return sorted(rows, key=lambda r: (r["T"], r["S"]))
