"""params.yaml: each section as a validated, typed object, and overlays on top of the file.

Every section is read through a `Params` subclass that names its keys with their
types and ranges. Values are checked strictly and in one place: "3" is not 3, true
is not 1, "3600" is not a list of targets, and a key the class does not know (a
typo) is an error. Defaults live in params.yaml alone: a missing key or section is
an error, never a silent preset.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML, YAMLError

from dtrepro.registry.datasets import ENV_IDS, ENV_VERSIONS, FACTS, lookup
from dtrepro.runtime.errors import DtreproError

PARAMS_FILE = "params.yaml"
Seed = Annotated[int, Field(ge=0, lt=2**31)]  # a seed every library takes (gymnasium's resets, numpy, torch)


def _known_env(value: str | None) -> str | None:
    if value is not None and value not in ENV_IDS:
        raise ValueError(f"an env id must be one of {', '.join(ENV_IDS)}, or null for the dataset's")
    return value


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        raise ValueError("a device must be auto, cpu, cuda or cuda:N")
    return value


EnvId = Annotated[str | None, AfterValidator(_known_env)]  # null: the dataset's env
DeviceName = Annotated[str, AfterValidator(_device_name)]
RUN_VALUES = "DTREPRO_RUN_VALUES"  # set by a named run for its stages: its name and the values it started with


def read_yaml(text: str, where: str):
    """YAML text read as DVC reads params.yaml (YAML 1.2: `1e-05` is a number, `no` a string)."""
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise DtreproError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DtreproError(f"{path} does not exist. Run from the repository root, or pass --params PATH.")
    data = read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise DtreproError(f"{path} must hold a mapping of sections, not {type(data).__name__}.")
    return data


def check_run_values(path: str | os.PathLike = PARAMS_FILE, run: dict | None = None) -> None:
    """Refuse a params file whose values are no longer those named run `run` started with (by default the run in
    `RUN_VALUES`, set for its stages): another `dvc exp run` or an editor rewrote it mid-run, and the stages would mix
    two sets of values."""
    given = os.environ.get(RUN_VALUES)
    run = run or (json.loads(given) if given else None)
    if not run:
        return
    started, now = run["values"], flatten(load_yaml(path))
    changed = sorted(k for k, v in started.items() if now.get(k, "(absent)") != v)
    if changed:
        key = changed[0]
        raise DtreproError(
            f"{path} changed while the named run '{run['name']}' was running: {key} was {started[key]!r} when it "
            f"started and is {now.get(key, '(absent)')!r} now ({len(changed)} value(s) differ; another `dvc exp run` "
            f"or an editor wrote the file). The run stopped and DVC records no stage that saw the new values as "
            f"done, so no result mixes the two sets. When the other command has finished, run `dtrepro run "
            f"{run['name']}` again: what was finished is reused."
        )


def run_values(name: str, params: dict) -> dict:
    """What named run `name` checks params.yaml against: its name and the values it started with."""
    return {"name": name, "values": flatten(params)}


def _describe(error: dict, where: str) -> str:
    key = ".".join([where, *map(str, error["loc"])]) if error["loc"] else where
    if error["type"] == "missing":
        return f"{key} is missing (every key has its value in params.yaml)"
    if error["type"] == "extra_forbidden":
        return f"{key} is not a parameter (a typo?)"
    value = error["input"]
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"{key}: {message}"
    return f"{key} is {value!r} ({type(value).__name__}): {message[0].lower()}{message[1:]}"


class Params(BaseModel):
    """One section of params.yaml; `section` is its name there."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
    section: ClassVar[str]

    @classmethod
    def from_params(
        cls, params: Mapping | str | os.PathLike = PARAMS_FILE, dataset: str | None = None, **context: Any
    ) -> Self:
        """The section of `params` (a params file, or its content) as this class, validated.

        `dataset` (a name of study.datasets) gives the values of the null keys that stand for its facts.
        `context` holds values that are not in the section (another section's object, a run's K).
        """
        where = params if not isinstance(params, Mapping) else PARAMS_FILE
        data = params if isinstance(params, Mapping) else load_yaml(params)
        section = data.get(cls.section)
        if not isinstance(section, dict):
            raise DtreproError(f"{where} has no '{cls.section}' section (a mapping of keys); the stage needs it.")
        try:
            if "dataset" in cls.model_fields:  # a section that works on the dataset itself
                context = {"dataset": dataset, **context}
            validated = cls.model_validate({**section, **context})
        except ValidationError as err:
            problems = "; ".join(_describe(e, cls.section) for e in err.errors())
            keys = ", ".join(k for k in cls.model_fields if k not in context)
            raise DtreproError(
                f"{where}: {problems}. The keys of '{cls.section}' are: {keys}; see the comments in params.yaml "
                f"for what each allows."
            ) from None
        return validated.with_dataset_facts(data, dataset)

    def with_dataset_facts(self, params: Mapping, dataset: str | None) -> Self:
        """This section with each null key that stands for a fact of the dataset (`datasets.FACTS`) filled in
        from `dataset` and `data.env_version`."""
        missing = [k for k in type(self).model_fields if k in FACTS and getattr(self, k) is None]
        if not missing:
            return self
        version = (params.get("data") or {}).get("env_version")
        if dataset is None or version not in ENV_VERSIONS:
            raise DtreproError(
                f"{self.section}.{missing[0]} is null, which means the dataset's, but the dataset is {dataset!r} "
                f"and data.env_version {version!r} (one of {list(ENV_VERSIONS)}). Name the dataset (the stage's "
                f"--dataset), set data.env_version, or set {self.section}.{missing[0]} itself."
            )
        known = lookup(dataset)
        return self.model_copy(update={k: FACTS[k](known.name, version) for k in missing})


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


def flatten(params: dict, where: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} as {'a.b': 1}: the keys that `dvc exp run -S` sets."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{where}{key}."))
        else:
            out[f"{where}{key}"] = value
    return out


def add_params_argument(parser) -> None:
    """`--params`: the params file a stage script reads."""
    parser.add_argument("--params", default=PARAMS_FILE, help=f"params file (default: {PARAMS_FILE})")


def add_dataset_argument(parser) -> None:
    """`--dataset`: the name in study.datasets a stage script works on."""
    parser.add_argument("--dataset", required=True, help="a name of study.datasets, e.g. hopper-medium-v2")
