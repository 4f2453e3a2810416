"""Named runs: a named set of values from profiles/, run as a DVC experiment of that name.

`profiles/NAME.yaml` holds part of a params.yaml (and may name, as `base:`, a profile
it builds on). `run NAME` takes the committed
params.yaml (HEAD's: the D4RL defaults), puts the profile and any `-S key=value` on
top, and hands every value that differs from the workspace's params.yaml to
`dvc exp run -n NAME -S key=value ...`. DVC itself writes params.yaml, runs what
changed, records dvc.lock and keeps the experiment under NAME, so `dvc status`,
`dvc exp show` and `dvc metrics diff` agree with the workspace afterwards, and
later plain `dvc exp run -S ...` commands build on the named run's values.
Running NAME again replaces that experiment.

DVC writes params.yaml before it takes its repository lock, so two experiments
started at once in one workspace would overwrite each other's values. A named run
therefore holds a lock of its own for its whole length and refuses to start while
another named run, or any DVC command holding DVC's lock, is running.

    python -m dtrepro.named_runs run demo
    python -m dtrepro.named_runs run smoke -S data.url=/data/hopper.hdf5
    python -m dtrepro.named_runs show demo
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from dtrepro.errors import DtreproError, run_stage
from dtrepro.params import PARAMS_FILE, flatten, load_yaml, merge

PROFILES_DIR = "profiles"
DEFAULT = "default"
BASE = "base"  # a profile's key naming the profile it builds on


def available(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml"))


def parse_assignment(text: str) -> dict:
    """`a.b.c=VALUE` (VALUE read as YAML) as the nested mapping {'a': {'b': {'c': VALUE}}}."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise DtreproError(f"Override {text!r} is not of the form section.key=value.")
    value = yaml.safe_load(raw) if raw else None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def committed_params(root: Path) -> dict:
    """HEAD's params.yaml: the defaults every named run starts from."""
    shown = subprocess.run(["git", "show", f"HEAD:{PARAMS_FILE}"], cwd=root, capture_output=True, text=True)
    if shown.returncode:
        raise DtreproError(
            f"{root} has no committed {PARAMS_FILE} ({shown.stderr.strip()}). Named runs are DVC experiments, "
            f"which need a git repository with a commit: run `git init && git add -A && git commit -m init`."
        )
    return yaml.safe_load(shown.stdout) or {}


def resolve(root: Path, name: str, assignments: list[str]) -> dict:
    """The committed params.yaml with profile `name` (none for 'default') and the assignments merged in."""
    params = committed_params(root)
    if name != DEFAULT:
        path = root / PROFILES_DIR / f"{name}.yaml"
        if not path.is_file():
            raise DtreproError(
                f"No named run '{name}': {path} does not exist. Named runs: {[DEFAULT] + available(root)}."
            )
        profile = load_yaml(path)
        base = profile.pop(BASE, None)  # a profile may build on another: `base: smoke`
        if base is not None:
            if not isinstance(base, str) or base in (name, DEFAULT):
                raise DtreproError(f"{path}: '{BASE}' must name another named run, not {base!r}.")
            params = resolve(root, base, [])
        params = merge(params, profile)
    for text in assignments:
        params = merge(params, parse_assignment(text))
    return params


def hydra_value(value) -> str:
    """A YAML value in the override grammar of `dvc exp run -S` (Hydra's): strings always quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("'", "\\'") + "'"


def overrides(wanted: dict, current: dict) -> list[str]:
    """`-S key=value` for every value of `wanted` that `current` does not already have."""
    have = flatten(current)
    return [f"{k}={hydra_value(v)}" for k, v in flatten(wanted).items() if k not in have or have[k] != v]


def _dvc_lock_holders(root: Path) -> list[str]:
    """The commands that hold DVC's own repository lock now (live processes only)."""
    path = root / ".dvc" / "tmp" / "rwlock"
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return []
    holders = set()
    for kind in ("read", "write"):
        for entries in info.get(kind, {}).values():
            for entry in entries if isinstance(entries, list) else [entries]:
                pid = entry.get("pid")
                if pid and Path(f"/proc/{pid}").exists():
                    holders.add(f"PID {pid}: {entry.get('cmd', '?')}")
    return sorted(holders)


@contextmanager
def workspace_lock(root: Path, name: str):
    """Hold this workspace's named-run lock; refuse at once while another run holds it or DVC's own."""
    path = root / ".dvc" / "tmp" / "named-run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise DtreproError(
                f"Another named run is running in {root} ({f.read().strip() or 'unknown'}); named run '{name}' "
                f"was not started and nothing was changed. Wait for it to finish, or queue this one to run after "
                f"it in its own temporary workspace: dvc exp run --queue -S ... ; dvc queue start."
            ) from None
        busy = _dvc_lock_holders(root)
        if busy:
            raise DtreproError(
                f"A DVC command is running in {root} ({'; '.join(busy)}); named run '{name}' was not started and "
                f"nothing was changed. Wait for it to finish, then run again."
            )
        f.truncate(0)
        f.write(f"'{name}', PID {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


def dvc(root: Path, *args: str, quiet: bool = False) -> subprocess.CompletedProcess:
    """Run dvc in `root`, its output shown (or captured, `quiet`)."""
    # this interpreter's bin folder first, so that dvc and the stages' `python` are the same environment's
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        return subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=quiet, text=True)
    except FileNotFoundError:
        raise DtreproError("dvc is not installed in this environment: run `make install`.") from None


def validate(params: dict) -> None:
    """Check every section the stages read, so that a bad value stops the run before anything runs."""
    from dtrepro.collect.collector import CollectParams
    from dtrepro.data.download import DownloadParams
    from dtrepro.data.repair import RepairParams
    from dtrepro.evaluation.eval_params import EvalParams
    from dtrepro.registry.datasets import lookup
    from dtrepro.study import StudyParams, check_overrides
    from dtrepro.training.loop import TrainParams

    study = StudyParams.from_params(params)
    check_overrides(study, params)
    for name in study.datasets:
        sources = (DownloadParams, CollectParams) if lookup(name).source == "collect" else (DownloadParams,)
        for section in (*sources, RepairParams, TrainParams, EvalParams):
            section.from_params(params, name)


def check_git_identity(root: Path) -> None:
    """DVC records each experiment as a git commit, which needs an author."""
    for key in ("user.name", "user.email"):
        if subprocess.run(["git", "config", key], cwd=root, capture_output=True).returncode:
            raise DtreproError(
                f"git has no {key} here, and DVC records every experiment as a git commit. Set one, e.g. "
                f"`git config --global {key} ...`, then run again; nothing was changed."
            )


def run(root: Path, name: str, assignments: list[str], targets: list[str]) -> int:
    """Run named run `name` as the DVC experiment `name`; return dvc's exit code."""
    wanted = resolve(root, name, assignments)
    validate(wanted)
    check_git_identity(root)
    with workspace_lock(root, name):
        sets = overrides(wanted, load_yaml(root / PARAMS_FILE))
        dvc(root, "exp", "remove", name, quiet=True)  # a run of the same name replaces the old one
        args = ["exp", "run", "-n", name, *(x for s in sets for x in ("-S", s)), *targets]
        print("named run:", " ".join(["dvc", *args]), flush=True)
        return dvc(root, *args).returncode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dtrepro.named_runs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    sub = parser.add_subparsers(dest="verb", required=True)
    show = sub.add_parser("show", help="print params.yaml as the named run would make it")
    go = sub.add_parser("run", help="run the named set of values as a DVC experiment of that name")
    for p in (show, go):
        p.add_argument("name", help=f"a profile of {PROFILES_DIR}/, or '{DEFAULT}' for the committed params.yaml")
        p.add_argument("-S", "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    go.add_argument("targets", nargs="*", help="stages to run (default: the whole pipeline), e.g. report")
    sub.add_parser("list", help="list the named runs")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.verb == "list":
        print("\n".join([DEFAULT] + available(root)))
    elif args.verb == "show":
        print(yaml.safe_dump(resolve(root, args.name, args.assignments), sort_keys=False), end="")
    else:
        code = run(root, args.name, args.assignments, args.targets)
        if code:
            sys.exit(code)


if __name__ == "__main__":
    run_stage(main)
