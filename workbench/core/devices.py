"""Where a run computes: one helper turns a device name into a torch.device or a one-line error naming the fix, and
one sets the CUDA matmul numerics. The CLI (`sample --device`, `eval --device`), `generate(..., device=)`, the app
(`-- --device`) and the notebooks all resolve through `resolve_device`, so a typo or a missing GPU reads the same
everywhere."""

from __future__ import annotations

import torch

KINDS = ("cpu", "cuda", "mps")  # the device types the workbench runs on


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The torch.device `name` names ("cpu", "cuda", "cuda:1", "mps"; None: "cpu"), checked to exist on this machine.
    An unknown name, a device type the workbench does not run on, a missing CUDA or MPS, or a GPU index beyond
    those present is a ValueError of one line that names the fix."""
    if name is None:
        return torch.device("cpu")
    try:
        device = name if isinstance(name, torch.device) else torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise ValueError(
            f"device: unknown device {str(name)!r}. Fix: use one of cpu, cuda, cuda:N (N a GPU index) or mps."
        ) from None
    if device.type not in KINDS:
        raise ValueError(f"device: {device.type!r} is not a device the workbench runs on. Fix: use cpu, cuda or mps.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(
                f"device: {name} is not available here ({why}). Fix: use --device cpu, or run on a machine with a "
                "GPU and a CUDA build of torch."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device: {name} names GPU {device.index}, and this machine has {count} (0..{count - 1}). "
                f"Fix: use cuda:0 .. cuda:{count - 1}."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: {name} is not available here (no Apple GPU). Fix: use --device cpu.")
    return device


def set_tf32(device: torch.device, enabled: bool) -> None:
    """On a CUDA device, let fp32 matmuls and convolutions use TF32 tensor cores (`enabled`) or not: about 3x faster
    matmuls on Ampere and later at a 10-bit mantissa. A process-wide switch of torch; nothing happens elsewhere."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


__all__ = ["resolve_device", "set_tf32", "KINDS"]
