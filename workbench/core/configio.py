"""Building the config dataclasses from mappings (YAML, JSON headers, command-line text), field by field, with
errors that name the field and the fix, and reading the YAML they come from. Generic: nothing here knows the
workbench's sections."""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml


def read_yaml(text_or_path: str | Path) -> dict:
    """The mapping of YAML text or of a YAML file (a Path, or one line ending in .yaml/.yml); a missing file or YAML
    that is not a mapping is an error naming the fix."""
    p = Path(text_or_path)
    one_line = isinstance(text_or_path, Path) or "\n" not in str(text_or_path)
    if one_line and (p.exists() or p.suffix in (".yaml", ".yml")):
        if not p.is_file():
            raise ValueError(
                f"config: no such file {p}. Fix: check the path (a YAML file of 'model: ...' "
                "sections), or pass the YAML text itself."
            )
        text = p.read_text()
    else:
        text = str(text_or_path)
    d = yaml.safe_load(text)
    if not isinstance(d, dict):
        raise ValueError(f"config: YAML must hold a mapping, got {type(d).__name__}. Fix: write 'model: ...' keys.")
    return d


def from_dict(cls: type, d: dict, prefix: str = "", sections: dict | None = None) -> Any:
    """An instance of dataclass `cls` from a mapping: unknown fields and badly typed values are errors naming the
    field and the fix. `sections` maps top-level field names to the dataclasses of nested sections."""
    if not isinstance(d, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {d!r}. Fix: use 'key: value' entries.")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"{prefix or 'config'}: unknown field(s) {sorted(unknown)}. Fix: use only {sorted(known)}.")
    kwargs = {}
    for name, value in d.items():
        f = known[name]
        sub = (sections or {}).get(name) if not prefix else None
        if sub is not None:
            kwargs[name] = from_dict(sub, value, name)
        else:
            kwargs[name] = coerce(value, f, f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def coerce(value: Any, f: dataclasses.Field, name: str) -> Any:
    """`value` as the type of field `f`'s default (YAML and command-line text arrive as strings and numbers)."""
    default = f.default if f.default is not dataclasses.MISSING else None
    if f.name == "devices":  # Fabric takes a count, a list of indices or "auto"
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if (
            value == "auto"
            or (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, list) and all(isinstance(v, int) for v in value))
        ):
            return value
        raise ValueError(
            f"{name}: expected a device count, a list of indices or 'auto', got {value!r}. "
            "Fix: write e.g. 2, [0, 1] or auto."
        )
    if isinstance(default, tuple):  # a list of integers: [1, 2, 3] in YAML, "1,2,3" on the command line
        items = value.strip("[]() ").split(",") if isinstance(value, str) else value
        try:
            out = tuple(int(v) for v in items if str(v).strip())
            if any(isinstance(v, bool) or float(v) != int(float(v)) for v in items if str(v).strip()):
                raise ValueError
            return out
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: expected a list of integers, got {value!r}. Fix: write e.g. [1, 2, 3]."
            ) from None
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true/false, got {value!r}. Fix: write true or false.")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a number, got {value!r}. Fix: write a number.")
        try:
            num = float(value) if isinstance(value, str) else value
            if isinstance(default, int):
                if float(num) != int(float(num)):
                    raise ValueError
                return int(float(num))
            return float(num)
        except (TypeError, ValueError, OverflowError):
            kind = "an integer" if isinstance(default, int) else "a number"
            raise ValueError(f"{name}: expected {kind}, got {value!r}. Fix: write {kind}.") from None
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {value!r}. Fix: quote the value.")
    return value
