"""Building the config dataclasses from mappings (YAML, JSON headers, command-line text), field by field, with
errors that name the field and the fix, and reading the YAML they come from. Generic: nothing here knows the
workbench's sections."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml


class RenamedSetting(FutureWarning):
    """A config spelling that still reads but has moved: the message names the new spelling."""


def check(ok: bool, name: str, problem: str, fix: str) -> None:
    """Raise the house's one-line error, `name: problem. Fix: fix.`, unless `ok`."""
    if not ok:
        raise ValueError(f"{name}: {problem}. Fix: {fix}.")


def migrate(d: dict, moved: dict[str, str], warn: bool = True) -> dict:
    """A copy of the nested mapping `d` with every old dotted spelling in `moved` ({"old.key": "new.key"}) carried to
    its new home, with a one-line `RenamedSetting` warning per spelling found when `warn` (stored configs, such as
    checkpoint headers, are carried over quietly). An old and a new spelling that disagree are an error."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for old, new in moved.items():
        (osec, okey), (nsec, nkey) = old.split("."), new.split(".")
        if not isinstance(out.get(osec), dict) or okey not in out[osec]:
            continue
        value = out[osec].pop(okey)
        target = out.setdefault(nsec, {})
        check(
            isinstance(target, dict) and target.get(nkey, value) == value,
            old,
            f"moved to {new}, and both are given with different values",
            f"write {new} only",
        )
        target[nkey] = value
        if warn:
            warnings.warn(renamed_message(old, new), RenamedSetting, stacklevel=3)
    return out


def renamed_message(old: str, new: str) -> str:
    """The one line that tells a user an old spelling was read."""
    return f"config: {old} is now {new} (read this time). Fix: write {new}."


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
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{p}: not UTF-8 text (byte {err.start}). Fix: save the config as UTF-8 YAML.") from None
    else:
        text, source = str(text_or_path), "config text"
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: {yaml_problem(err)}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{source}: YAML must hold a mapping, got {type(d).__name__}. Fix: write 'model: ...' keys.")
    return d


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML parser error as one line: where (line, column), what, and the usual fix."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(str(getattr(err, "problem", None) or err).split())  # one line
    return (
        f"{where}malformed YAML ({what}). Fix: give each section's fields the same indent under it "
        "('model:' then '  depth: 4'), put a space after each colon and close every bracket and quote."
    )


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
