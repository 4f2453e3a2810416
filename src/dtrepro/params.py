"""Reading params.yaml: the whole file, one section of it, and overlays on top of it."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import TypeVar

import yaml

from dtrepro.errors import DtreproError

PARAMS_FILE = "params.yaml"
T = TypeVar("T")


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise DtreproError(f"{path} does not exist. Run from the repository root, or pass --params PATH.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DtreproError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise DtreproError(f"{path} must hold a mapping of sections, not {type(data).__name__}.")
    return data


def section(params_path: str | os.PathLike | None, name: str) -> dict:
    """One top-level section of the params file, e.g. `repair`.

    With `params_path` None (a stage run by hand, outside the repository) the
    section is read from ./params.yaml if there is one, else it is empty and the
    stage's defaults apply.
    """
    if params_path is None:
        if not Path(PARAMS_FILE).exists():
            return {}
        params_path = PARAMS_FILE
    params = load_yaml(params_path)
    if not isinstance(params.get(name), dict):
        raise DtreproError(f"{params_path} has no '{name}' section; the stage reading it needs one.")
    return params[name]


def merge(base: dict, overlay: dict, where: str = "") -> dict:
    """`base` with `overlay`'s values put in, recursively; an overlay key unknown to `base` is an error."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        dotted = f"{where}{key}"
        if key not in out:
            raise DtreproError(
                f"Override '{dotted}' names no parameter of params.yaml (a typo?). Known keys here: {sorted(out)}."
            )
        if isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = merge(out[key], value, f"{dotted}.")
        else:
            out[key] = value
    return out


def parse_assignment(text: str) -> dict:
    """`a.b.c=VALUE` (VALUE read as YAML) as the nested mapping {'a': {'b': {'c': VALUE}}}."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise DtreproError(f"Override {text!r} is not of the form section.key=value.")
    value = yaml.safe_load(raw) if raw else None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def from_section(cls: type[T], section: dict, name: str, other_readers: tuple[str, ...] = ()) -> T:
    """Build the params dataclass `cls` from a section; a key it does not know (a typo) is an error.

    `other_readers` are keys of the same section that another part of the stage reads.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(section) - known - set(other_readers)
    if unknown:
        raise DtreproError(f"Unknown {name} param(s) {sorted(unknown)} in params.yaml; known ones are {sorted(known)}.")
    return cls(**{k: v for k, v in section.items() if k in known})
