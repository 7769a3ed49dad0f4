"""Published reference files (.npz) in and out: the layouts papers report FID-50K against.

- pytorch-fid (`--save-stats`) and FFHQ-style statistics: `mu` (F,) and `sigma` (F, F).
- ADM (guided-diffusion's evaluator, e.g. VIRTUAL_imagenet256_labeled.npz): `mu`/`sigma` (plus `mu_s`/`sigma_s` of
  the spatial features, ignored here) and `arr_0`. In ADM's files `arr_0` holds the reference *images*, uint8
  (N, H, W, 3); a float (N, F) `arr_0` is read as raw activations. Images are run through the extractor (slow on a
  CPU: ~10 Inception images/s); activations become the statistics directly.

Either way the real features, where the file has them, also serve KID and precision/recall; a file with only
`mu`/`sigma` gives FID alone (KID and precision/recall are reported as not available). A published file names no
extractor: it is taken to be of the one asked for (the TF-FID Inception for ADM and FFHQ files; pytorch-fid's own
Inception port is close to it but not identical), and only its feature dimension can be checked. Files this
project writes (`save_npz`) add `extractor_id` and `card` entries, which the other readers ignore and this one checks.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.paths import sha256_file
from .features import extract_features, extractor_device, resolve_extractor
from .references import ReferenceStats, load_reference

KID_SAMPLE = 1000  # real features kept from raw activations or images for KID (all of them serve precision/recall)
SYMMETRY_TOLERANCE = 1e-6  # largest |sigma - sigma^T| relative to max |sigma| accepted as symmetric


def _refuse(path: Path, problem: str, fix: str) -> ValueError:
    return ValueError(f"reference {path.name}: {problem}. Fix: {fix}.")


def _open(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, every one read now (a truncated member fails here, not later)."""
    foreign = "pass an .npz with 'mu' and 'sigma' (pytorch-fid, ADM) or 'arr_0' (ADM images or activations)"
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        problem = f"not a readable .npz ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'empty'})"
        raise _refuse(path, problem, f"re-download or rewrite the file; {foreign}") from None


def _check_stats(path: Path, mu: np.ndarray, sigma: np.ndarray, dim: int, extractor_id: str) -> None:
    """Shapes, finiteness and symmetry of (mu, sigma) against an extractor of `dim` features."""
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise _refuse(
            path,
            f"'mu' has shape {mu.shape} and 'sigma' {sigma.shape}, not (F,) and (F, F)",
            "write mu as a vector and sigma as its square covariance",
        )
    if len(mu) != dim:
        raise _refuse(
            path,
            f"{len(mu)}-d statistics, but {extractor_id} gives {dim}-d features",
            f"use a reference of {dim}-d features (--extractor inception for 2048-d Inception files) or the "
            f"extractor it was made with",
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise _refuse(path, "'mu' or 'sigma' holds NaN or infinite values", "recompute the statistics")
    asymmetry = float(np.abs(sigma - sigma.T).max()) / max(float(np.abs(sigma).max()), 1e-30)
    if asymmetry > SYMMETRY_TOLERANCE:
        raise _refuse(
            path,
            f"'sigma' is not symmetric (max |sigma - sigma^T| / max |sigma| = {asymmetry:.2g})",
            "pass a covariance matrix (np.cov of the features)",
        )


def _real_features(path: Path, arr: np.ndarray, extractor: nn.Module, progress) -> torch.Tensor:
    """Features (N, F) from ADM's `arr_0`: uint8 images (N, H, W, 3) through the extractor, or float activations."""
    if arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.dtype == np.uint8:
        batches = []
        for start in range(0, len(arr), 64):
            chunk = torch.from_numpy(arr[start : start + 64]).permute(0, 3, 1, 2).float() / 127.5 - 1  # (b, C, H, W)
            batches.append(extract_features(extractor, chunk, device=extractor_device(extractor)))  # where it is
            if progress:
                progress(min(start + 64, len(arr)), len(arr))
        return torch.cat(batches)
    if arr.ndim == 2 and np.issubdtype(arr.dtype, np.floating):
        if arr.shape[1] != extractor.num_features:
            raise _refuse(
                path,
                f"'arr_0' holds {arr.shape[1]}-d activations, but {extractor.id} gives "
                f"{extractor.num_features}-d features",
                "use activations of this extractor, or the extractor they were made with",
            )
        if not np.isfinite(arr).all():
            raise _refuse(path, "'arr_0' holds NaN or infinite activations", "recompute the activations")
        return torch.from_numpy(arr).float()
    raise _refuse(
        path,
        f"'arr_0' of shape {arr.shape} and dtype {arr.dtype} is neither uint8 images (N, H, W, 3) nor (N, F) "
        "float activations",
        "pass ADM's reference batch or activations as written by np.savez",
    )


def read_npz(path: str | Path, extractor: str | nn.Module = "inception", progress=None) -> ReferenceStats:
    """Reference statistics from a published .npz (module docstring) for `extractor`; every misfit (truncated or
    foreign file, feature dimension or extractor, NaNs, a non-symmetric covariance) is a one-line ValueError."""
    path, extractor = Path(path), resolve_extractor(extractor)
    arrays = _open(path)
    written_by = str(arrays["extractor_id"]) if "extractor_id" in arrays else None
    if written_by is not None and written_by != extractor.id:
        raise _refuse(
            path,
            f"written for {written_by}, not {extractor.id}",
            f"evaluate with --extractor {written_by.rsplit('-', 1)[0]} or use a reference of {extractor.id}",
        )
    if "mu" not in arrays and "arr_0" not in arrays:
        raise _refuse(
            path,
            f"no 'mu'/'sigma' or 'arr_0' entries (it holds {sorted(arrays) or 'nothing'})",
            "pass a pytorch-fid or ADM reference file",
        )
    real = _real_features(path, arrays["arr_0"], extractor, progress) if "arr_0" in arrays else None
    if "mu" in arrays:
        if "sigma" not in arrays:
            raise _refuse(path, "'mu' without 'sigma'", "write both (np.savez(path, mu=mu, sigma=sigma))")
        mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
        _check_stats(path, mu, sigma, extractor.num_features, extractor.id)
        count = len(real) if real is not None else None
        stats = ReferenceStats(torch.from_numpy(mu), torch.from_numpy(sigma), torch.zeros(0, len(mu)), {})
    else:
        stats, count = ReferenceStats.from_features(real, {}), len(real)
    own = json.loads(str(arrays["card"])) if "card" in arrays else {}
    if "kid_features" in arrays:
        stats.kid_features = torch.from_numpy(arrays["kid_features"]).float()
    elif real is not None:
        stats.kid_features = real.float()  # all of them: precision/recall use as many as LiveOptions.pr_max allows
    stats.card = {
        **own,
        "name": own.get("name", path.stem),
        "count": own.get("count", count),
        "extractor": extractor.name,
        "extractor_id": extractor.id,
        "extractor_assumed": written_by is None,  # a published file names no extractor: taken as the one asked for
        "layout": "workbench" if own else ("adm" if "arr_0" in arrays else "pytorch-fid"),
    }
    stats.source = {"file": path.name, "sha256": sha256_file(path)}
    return stats


def save_npz(stats: ReferenceStats, path: str | Path) -> str:
    """Write `stats` in the pytorch-fid/ADM layout (`mu`, `sigma` float64) plus this project's `kid_features`,
    `extractor_id` and `card` (JSON), through a temporary file renamed into place; returns the file's sha256."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--save-reference {path}: not an .npz name. Fix: name the file <something>.npz.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")  # np.savez appends .npz to names without it
    np.savez(
        tmp,
        mu=stats.mu.double().numpy(),
        sigma=stats.sigma.double().numpy(),
        kid_features=stats.kid_features.float().numpy(),
        extractor_id=np.array(stats.card["extractor_id"]),
        card=np.array(json.dumps(stats.card, default=str)),
    )
    tmp.replace(path)
    return sha256_file(path)


def load_any_reference(path: str | Path, extractor: str | nn.Module, progress=None) -> ReferenceStats:
    """A reference file of either kind: .npz (read_npz) or this project's .safetensors with its card."""
    path = Path(path)
    if path.suffix == ".npz":
        return read_npz(path, extractor, progress)
    return load_reference(path)
