"""Self-describing checkpoints: one safetensors file per checkpoint, loaded without executing pickled code.

A file holds every tensor (model and EMA weights, optimizer moments, RNG states) under a prefixed name, and a JSON
header in the safetensors metadata with everything else: the config, the step, the LR-schedule state, the data
position, the optimizer structure and run metadata. Nested state (optimizer, scheduler, RNG) is stored as a JSON
tree whose tensor leaves point at tensor names, so `load_checkpoint` rebuilds it exactly.

Writes are atomic (temporary file in the same folder, fsync, os.replace, fsync of the folder), the text file
`latest` names the newest checkpoint of a run folder, and only the last `keep_last` checkpoints are kept. A write
that fails (disk full) or is killed never replaces the last good checkpoint, and `latest` always names a complete
file. Since format version 2 the metadata carries a SHA-256 checksum over itself and every tensor (name, dtype,
shape, bytes): a flipped bit anywhere is detected on loading. Version 1 files (no checksum) still load.

Sharded runs (train.strategy fsdp) write the same single file, gathered by global rank 0 (model and EMA weights:
what load_for_inference, export and the app read), plus a folder ckpt-<step>.shards/ with one file per rank holding
that rank's shard of the optimizer state (save_shard / load_shard: checksummed and atomic alike). Every rank writes
its shard before rank 0 writes the single file and `latest`, so `latest` never names a checkpoint with shards missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.config import Config
from ..core.model import MADFormer, build_model, use_attention

FORMAT = "workbench-checkpoint"
VERSION = 2
CHECKSUM = "sha256"  # metadata key of the checksum (format version >= 2)
LATEST = "latest"
CKPT_PATTERN = re.compile(r"^ckpt-(\d+)\.safetensors$")
TMP_PATTERN = re.compile(r"^\..+\.(\d+)\.tmp$")  # _atomic_write's temporary files: .<name>.<pid>.tmp
# the first bytes of files that people pass by mistake, for a message that says what the file is
MAGIC = {
    b"PK\x03\x04": "a torch.save (pickle/zip) file",
    b"\x80": "a pickle file",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip file",
    b"\x93NUMPY": "a NumPy .npy file",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, of another format or another architecture."""


@dataclass
class Checkpoint:
    config: Config
    step: int  # optimizer steps done
    model: dict[str, torch.Tensor]  # state_dict of the trained model
    ema: dict[str, torch.Tensor] | None  # state_dict of the EMA copy (None when train.ema_decay = 0)
    optimizer: dict | None = None  # optimizer.state_dict()
    scheduler: dict | None = None  # LR scheduler state_dict()
    rng: list[dict] = field(default_factory=list)  # one capture_rng() per rank
    data: dict = field(default_factory=dict)  # samples_seen (all ranks), epoch, index into its permutation
    meta: dict = field(default_factory=dict)  # wall time, images/tokens seen, git commit, val loss, ...
    kind: str = "train"  # "train" (resumable) or "export" (weights for inference only)
    path: Path | None = None  # where it was loaded from


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    name: str  # config name (preset or experiment)
    step: int
    N: int  # model.depth
    D: int  # model.diffusion_depth
    T: int  # model.num_blocks
    images_seen: int  # training images seen by all ranks
    kind: str  # "train" or "export"


# ---- nested state <-> (JSON tree, named tensors) ---------------------------------------------------------------
def _flatten(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()  # a copy: safetensors refuses shared storage
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, f"{name}/{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _flatten(v, f"{name}/{k}", tensors)] for k, v in obj.items()]}  # e.g. int ids
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{name}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"{name}: cannot store a {type(obj).__name__} in a checkpoint. Fix: convert it to a tensor, "
        "a number, a string or a list/dict of those."
    )


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


# ---- RNG states --------------------------------------------------------------------------------------------------
def capture_rng(noise: torch.Generator | None = None) -> dict:
    """The RNG states of this process: torch CPU (and CUDA), numpy, Python `random`, and the noise generator."""
    version, mt, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(mt), gauss],
        "noise": noise.get_state() if noise is not None else None,
    }


def restore_rng(state: dict, noise: torch.Generator | None = None) -> None:
    """Inverse of capture_rng."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    if noise is not None and state["noise"] is not None:
        noise.set_state(state["noise"])


# ---- atomic files ------------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """write(tmp_path) fills a temporary file next to `path`; only a complete, fsynced file replaces `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600 files; a checkpoint is as readable as any file
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file (a report, a card) so that a crash leaves the old file or the new one, never half."""
    _atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left by writers that were killed mid-write (their process no longer exists)."""
    for tmp in folder.iterdir():
        m = TMP_PATTERN.match(tmp.name)
        if m is None or int(m[1]) == os.getpid():
            continue
        try:
            os.kill(int(m[1]), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's process
            pass


# ---- save / load -------------------------------------------------------------------------------------------------
def _checksum(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata (but the checksum itself) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != CHECKSUM}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())  # raw bytes, any dtype (bf16 included)
    return h.hexdigest()


def _write(ckpt: Checkpoint, path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    header = {
        "kind": ckpt.kind,
        "config": ckpt.config.to_dict(),
        "step": ckpt.step,
        "model": _flatten(ckpt.model, "model", tensors),
        "ema": _flatten(ckpt.ema, "ema", tensors) if ckpt.ema is not None else None,
        "optimizer": _flatten(ckpt.optimizer, "optimizer", tensors),
        "scheduler": _flatten(ckpt.scheduler, "scheduler", tensors),
        "rng": _flatten(ckpt.rng, "rng", tensors),
        "data": ckpt.data,
        "meta": ckpt.meta,
    }
    metadata = {"format": FORMAT, "version": str(VERSION), "header": json.dumps(header)}
    metadata[CHECKSUM] = _checksum(metadata, tensors)
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_checkpoint(ckpt: Checkpoint, folder: str | Path, keep_last: int = 3) -> Path:
    """Write `ckpt` atomically as <folder>/ckpt-<step>.safetensors, point `latest` at it, keep the last `keep_last`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)
    path = folder / f"ckpt-{ckpt.step:07d}.safetensors"
    try:
        _write(ckpt, path)
        _atomic_write(folder / LATEST, lambda tmp: tmp.write_text(path.name + "\n"))
    except OSError as err:
        kept = (folder / LATEST).read_text().strip() if (folder / LATEST).is_file() else None
        state = (
            f"the last good checkpoint {kept} is untouched and '{LATEST}' still names it"
            if kept
            else "no earlier checkpoint exists"
        )
        raise OSError(
            err.errno,
            f"{path}: checkpoint not written ({err.strerror or err}); {state}. Fix: free space "
            f"in {folder} (or lower train.keep_last), then continue with --resume",
        ) from err
    for old in checkpoint_files(folder)[:-keep_last]:
        if old != path:  # a run resumed from an earlier checkpoint may still hold later-numbered ones
            old.unlink()
            shutil.rmtree(shard_folder(old), ignore_errors=True)
    return path


# ---- per-rank shards of sharded (FSDP) runs ----------------------------------------------------------------------
def shard_folder(ckpt_path: str | Path) -> Path:
    """The folder of a checkpoint's per-rank shards: ckpt-<step>.shards beside ckpt-<step>.safetensors."""
    return Path(ckpt_path).with_suffix(".shards")


def shard_file(folder: Path, rank: int, world_size: int) -> Path:
    return folder / f"rank-{rank:05d}-of-{world_size:05d}.safetensors"


def save_shard(state: dict, ckpt_path: str | Path, rank: int, world_size: int) -> Path:
    """Write one rank's part of a sharded checkpoint (a tree of tensors and numbers), checksummed and atomic."""
    folder = shard_folder(ckpt_path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    metadata = {
        "format": FORMAT + "-shard",
        "version": str(VERSION),
        "header": json.dumps(_flatten(state, "s", tensors)),
    }
    metadata[CHECKSUM] = _checksum(metadata, tensors)
    path = shard_file(folder, rank, world_size)
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def load_shard(ckpt_path: str | Path, rank: int, world_size: int) -> dict:
    """One rank's part of a sharded checkpoint; CheckpointError naming the shard and the fix when it is missing
    (another world size) or damaged."""
    folder = shard_folder(ckpt_path)
    path = shard_file(folder, rank, world_size)
    if not path.is_file():
        found = sorted(p.name for p in folder.glob("rank-*.safetensors")) if folder.is_dir() else []
        raise CheckpointError(
            f"{path}: no such shard (found {found or 'none'}). The optimizer state of a sharded run is split over "
            f"its processes. Fix: resume with as many processes as wrote it ({len(found) or 'see the file names'}), "
            "or start a new run from its weights."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if _checksum(metadata, tensors) != metadata.get(CHECKSUM):
            raise ValueError("checksum mismatch: the file was altered or damaged after it was written")
        return _unflatten(json.loads(metadata["header"]), tensors)
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise _open_error(Path(ckpt_path), f"its shard {path.name} is unreadable ({err})") from None


def checkpoint_files(folder: str | Path) -> list[Path]:
    """Training checkpoints ckpt-<step>.safetensors of a run folder, oldest first."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if CKPT_PATTERN.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CKPT_PATTERN.match(p.name).group(1)))


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or the one a run folder's `latest` names (its newest checkpoint if `latest` is missing)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: no such checkpoint file or run folder. Fix: pass a .safetensors checkpoint "
            "or the train.out_dir of a run (list them with workbench.training.checkpoint.list_checkpoints)."
        )
    latest = path / LATEST
    if latest.is_file():
        target = path / latest.read_text().strip()
        if not target.is_file():
            raise CheckpointError(
                f"{latest} names {target.name}, which does not exist. Fix: pass one of the "
                f"remaining checkpoints explicitly: {[p.name for p in checkpoint_files(path)]}."
            )
        return target
    files = checkpoint_files(path)
    if not files:
        raise CheckpointError(
            f"{path}: no checkpoint in this folder (no 'latest', no ckpt-*.safetensors). Fix: "
            "train first (python -m workbench train), or pass the right train.out_dir."
        )
    return files[-1]


def _open_error(path: Path, problem: str) -> CheckpointError:
    previous = [p.name for p in checkpoint_files(path.parent) if p != path]
    fix = (
        (
            f"resume from an earlier checkpoint kept by train.keep_last in {path.parent}: {previous} (pass it "
            f"explicitly, or write its name into {path.parent / LATEST})"
        )
        if previous
        else "re-create it (train again or re-export); no earlier checkpoint is left in this folder"
    )
    return CheckpointError(f"{path}: {problem}. Fix: {fix}.")


def _check_kind_of_file(path: Path) -> None:
    """Refuse, from its first bytes and before any parser sees it, a file that is not a safetensors file."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise _open_error(path, "empty file (0 bytes; the disk may have filled up while it was written)")
    if head[8:9] == b"{":  # safetensors: 8-byte header length, then the JSON header
        return
    what = next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)
    if what is not None:
        raise CheckpointError(
            f"{path}: this is {what}, not a workbench checkpoint; it was not loaded (pickles are "
            "never unpickled). Fix: pass a .safetensors checkpoint written by workbench training "
            "or export_for_inference."
        )
    raise _open_error(
        path, f"not a safetensors file, or truncated ({path.stat().st_size} bytes, starting {head[:8]!r})"
    )


def _metadata(path: Path) -> dict[str, str]:
    _check_kind_of_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise _open_error(path, f"truncated or corrupt checkpoint ({err})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: a safetensors file but not a workbench checkpoint (no '{FORMAT}' header). "
            "Fix: pass a file written by workbench training or export_for_inference."
        )
    version = metadata.get("version", "")
    if not version.isdigit():
        raise _open_error(path, f"corrupt header (format version {version!r})")
    if int(version) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this workbench reads "
            f"({VERSION}). Fix: update workbench."
        )
    return metadata


def _header(path: Path, metadata: dict[str, str]) -> dict:
    try:
        header = json.loads(metadata["header"])
    except (KeyError, ValueError) as err:
        raise _open_error(path, f"corrupt header ({type(err).__name__}: {err})") from None
    if not isinstance(header, dict):
        raise _open_error(path, "corrupt header (not a JSON object)")
    return header


def read_header(path: str | Path) -> dict:
    """The JSON header of a checkpoint without reading its tensors (the checksum is checked by load_checkpoint)."""
    path = resolve(path)
    return _header(path, _metadata(path))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file (or a run folder's latest) into a Checkpoint; tensors land on the CPU.

    Raises CheckpointError for anything but an intact workbench checkpoint: empty, truncated, bit-flipped (checksum),
    another format (pickles are refused from their first bytes, never unpickled)."""
    path = resolve(path)
    metadata = _metadata(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError) as err:
        raise _open_error(path, f"truncated or corrupt checkpoint ({err})") from None
    if CHECKSUM in metadata:
        if _checksum(metadata, tensors) != metadata[CHECKSUM]:
            raise _open_error(path, "checksum mismatch: the file was altered or damaged after it was written")
    elif int(metadata["version"]) >= 2:
        raise _open_error(path, f"corrupt header (format version {metadata['version']} without its checksum)")
    header = _header(path, metadata)
    try:
        return Checkpoint(
            config=Config.from_dict(header["config"]),
            step=header["step"],
            model=_unflatten(header["model"], tensors),
            ema=_unflatten(header["ema"], tensors) if header["ema"] is not None else None,
            optimizer=_unflatten(header.get("optimizer"), tensors),
            scheduler=_unflatten(header.get("scheduler"), tensors),
            rng=_unflatten(header.get("rng", []), tensors),
            data=header.get("data", {}),
            meta=header.get("meta", {}),
            kind=header["kind"],
            path=path,
        )
    except (KeyError, TypeError, ValueError) as err:  # a version-1 file (no checksum) edited by hand
        raise _open_error(path, f"inconsistent header ({type(err).__name__}: {err})") from None


def config_differences(saved: Config, current: Config, section: str | None = None) -> list[str]:
    """Fields that differ between two configs, as 'section.field: saved -> current' (one section, or all)."""
    a, b = saved.to_dict(), current.to_dict()
    out = []
    for sec in [section] if section else list(a):
        if isinstance(a[sec], dict):
            out += [f"{sec}.{k}: {a[sec][k]!r} -> {b[sec][k]!r}" for k in a[sec] if a[sec][k] != b[sec][k]]
        elif a[sec] != b[sec]:
            out.append(f"{sec}: {a[sec]!r} -> {b[sec]!r}")
    return out


def check_architecture(ckpt: Checkpoint, config: Config) -> None:
    """Raise CheckpointError listing the model fields in which `config` differs from the checkpoint's (the attention
    backend aside: it holds no weights, so a run may resume under the other one)."""
    diff = [d for d in config_differences(ckpt.config, config, "model") if not d.startswith("model.attention:")]
    if diff:
        raise CheckpointError(
            f"{ckpt.path}: checkpoint of another architecture ({'; '.join(diff)}). Fix: resume with "
            "the checkpoint's config (drop these overrides), or start a new run in another "
            "train.out_dir."
        )


# ---- inference ---------------------------------------------------------------------------------------------------
def load_for_inference(
    path: str | Path, use_ema: bool = True, device: torch.device | str = "cpu", attention: str | None = None
) -> tuple[MADFormer, Config]:
    """(model in eval mode, its config) from a checkpoint file, an export, or a run folder (its `latest`).

    use_ema=True loads the EMA weights when the checkpoint has them (exports hold only EMA weights). `attention`
    ("sdpa" or "flex"; None: the checkpoint's model.attention) runs the model under that backend: it holds no
    weights, so any checkpoint loads under either, and the returned config says which."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt.config)
    weights = ckpt.ema if (use_ema and ckpt.ema is not None) else ckpt.model
    try:
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise CheckpointError(
            f"{ckpt.path}: its weights do not fit the architecture its config describes "
            f"({str(err).splitlines()[0]} ...). Fix: the file was not written by workbench or was "
            "edited; re-export it from its training checkpoint."
        ) from None
    config = ckpt.config if attention is None else use_attention(model, ckpt.config, attention)
    return model.to(device).eval(), config


def list_checkpoints(folder: str | Path) -> list[CheckpointInfo]:
    """One record per readable checkpoint (*.safetensors with a workbench header) in `folder`, by step."""
    out = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            h = read_header(path)
            m = h["config"]["model"]
            info = CheckpointInfo(
                path,
                h["config"]["name"],
                h["step"],
                m["depth"],
                m["diffusion_depth"],
                m["num_blocks"],
                int(h["data"].get("samples_seen", 0)),
                h["kind"],
            )
        except (KeyError, TypeError, ValueError):  # unreadable or damaged (CheckpointError is a ValueError)
            continue
        out.append(info)
    return sorted(out, key=lambda r: (r.step, r.path.name))


def with_flow_shift(config: Config, flow_shift: float | None, fix: str = "omit --flow-shift") -> Config:
    """`config` with its sampling time shift set to `flow_shift` (None keeps the config's). Only a flow model samples
    on a shifted schedule; asking it of an epsilon model is an error that names `fix`."""
    if flow_shift is None:
        return config
    if config.diffusion.prediction != "flow":
        raise ValueError(
            f"--flow-shift {flow_shift}: the checkpoint's objective is {config.diffusion.prediction!r}, "
            f"and only a flow model's sampling schedule has a time shift. Fix: {fix}."
        )
    return config.override(**{"sample.flow_shift": flow_shift})  # validated: names the range


def export_for_inference(
    ckpt: str | Path,
    out: str | Path,
    dtype: torch.dtype = torch.float16,
    eval_report: dict | str | Path | None = None,
    sample: dict | None = None,
    use_ema: bool = True,
    flow_shift: float | None = None,
) -> Path:
    """Write a small file for shipping: EMA weights (the trained weights with use_ema=False or without EMA) in
    `dtype`, the config, the training budget (step, images seen, wall time) and an optional evaluation report (dict
    or JSON file). `sample`: fields of the config's sample section to ship instead of the run's (e.g. {"sampler":
    "dpm++2m"}, the sampler the report measured), and `flow_shift` the sampling time shift of a flow model; nothing
    that shapes the weights can change this way."""
    src = load_checkpoint(ckpt)
    config = src.config.override(**{f"sample.{k}": v for k, v in (sample or {}).items()})
    config = with_flow_shift(config, flow_shift, fix="export it without one")
    use_ema = use_ema and src.ema is not None
    weights = src.ema if use_ema else src.model
    if isinstance(eval_report, (str, Path)):
        eval_report = json.loads(Path(eval_report).read_text())
    meta = dict(
        src.meta,
        source=str(src.path),
        source_step=src.step,
        dtype=str(dtype).removeprefix("torch."),
        weights="ema" if use_ema else "raw",
        eval_report=eval_report,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(
        Checkpoint(
            config=config,
            step=src.step,
            model={k: v.to(dtype) for k, v in weights.items()},
            ema=None,
            data=src.data,
            meta=meta,
            kind="export",
        ),
        out,
    )
    return out
