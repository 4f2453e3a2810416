"""Named runs: a named set of values from profiles/, run as a DVC experiment of that name.

`profiles/NAME.yaml` holds part of a params.yaml (and may name, as `base:`, a named run
it builds on). `run NAME` takes the committed
params.yaml (HEAD's: the D4RL defaults), puts the named run's values and any `-S key=value` on
top, and hands every value that differs from the workspace's params.yaml to
`dvc exp run -n NAME -S key=value ...`. DVC itself writes params.yaml, runs what
changed, records dvc.lock and keeps the experiment under NAME, so `dvc status`,
`dvc exp show` and `dvc metrics diff` agree with the workspace afterwards, and
later plain `dvc exp run -S ...` commands build on the named run's values.
Running NAME again replaces that experiment once the new run has succeeded: until then it runs as
NAME-pending, and a failed or interrupted run leaves the earlier NAME in `dvc exp list`.

DVC writes params.yaml before it takes its repository lock, so two experiments
started at once in one workspace would overwrite each other's values. A named run
therefore holds a lock of its own for its whole length and refuses to start while
another named run, or any DVC command holding DVC's lock, is running.

    dtrepro run demo
    dtrepro run smoke -S data.url=/data/hopper.hdf5
    dtrepro show demo
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from dtrepro.params import PARAMS_FILE, RUN_VALUES, check_run_values, flatten, load_yaml, merge, read_yaml, run_values
from dtrepro.pipeline.commands import dvc
from dtrepro.runtime.errors import EXIT_INTERRUPTED, DtreproError, interrupted_line

PROFILES_DIR = "profiles"
DEFAULT = "default"
BASE = "base"  # the key of a named run's file naming the named run it builds on
PENDING = "-pending"  # the suffix of a named run's experiment until it has succeeded


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a file name of profiles/ that is also a DVC experiment's name


def names(root: Path) -> list[str]:
    """The named runs: 'default' (the committed params.yaml) and every profile of profiles/."""
    return [DEFAULT] + sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml") if NAME.fullmatch(p.stem))


def parse_assignment(text: str) -> dict:
    """`a.b.c=VALUE` (VALUE read as YAML 1.2, as DVC reads params.yaml: `1e-4` is a number) as the nested mapping
    {'a': {'b': {'c': VALUE}}}."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise DtreproError(f"Override {text!r} is not of the form section.key=value.")
    value = read_yaml(raw, f"The value of override {text!r}") if raw else None
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
    return read_yaml(shown.stdout, f"HEAD's {PARAMS_FILE}") or {}


def describe(root: Path, name: str) -> str:
    """One line of a named run: what it is, from its profile's first comment (`# NAME: what it is`), and its time
    (`# time: ...`, measured or expected as the profile says)."""
    if name == DEFAULT:
        return f"{DEFAULT}: params.yaml as committed (the large-batch preset unless changed); time: as large-batch"
    lines = [line.removeprefix("#").strip() for line in (root / PROFILES_DIR / f"{name}.yaml").read_text().splitlines()]
    what = next((line.removeprefix(f"{name}:").strip() for line in lines if line.startswith(f"{name}:")), "")
    time = next((line for line in lines if line.startswith("time:")), "time: not stated")
    return f"{name}: {what.split('. ')[0].rstrip('.')}; {time}"


def changes(root: Path, name: str, assignments: list[str]) -> dict:
    """The values named run `name` (with `assignments`) sets that the committed params.yaml does not hold."""
    committed = flatten(committed_params(root))
    return {k: v for k, v in flatten(resolve(root, name, assignments)).items() if committed.get(k, ...) != v}


def resolve(root: Path, name: str, assignments: list[str], _seen: tuple[str, ...] = ()) -> dict:
    """The committed params.yaml with profile `name` (none for 'default') and the assignments merged in."""
    if name not in names(root):
        raise DtreproError(
            f"No named run '{name}': named runs are the files of {root / PROFILES_DIR} by name (letters, digits, "
            f"'-' and '_'), never paths. Named runs: {names(root)}."
        )
    params = committed_params(root)
    if name != DEFAULT:
        path = root / PROFILES_DIR / f"{name}.yaml"
        profile = load_yaml(path)
        base = profile.pop(BASE, None)  # a named run may build on another: `base: smoke`
        if base is not None:
            if not isinstance(base, str) or base in (name, DEFAULT, *_seen):
                chain = " -> ".join([*_seen, name, str(base)])
                raise DtreproError(f"{path}: '{BASE}' must name another named run, not {base!r} (bases: {chain}).")
            params = resolve(root, base, [], (*_seen, name))
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


# DVC's warning for each output of the workspace's dvc.lock that its checkout cannot restore: outputs the run is
# about to make, so nothing the user needs to read
UNRESTORED = re.compile(r"^WARNING: No file hash info found for '.*'\. It won't be created\.\s*$")


def shown(name: str):
    """How a line of the named run's DVC output is shown: DVC's warnings for the outputs the run will make
    dropped, and the experiment called by its name, not by the name it has until it succeeds."""
    pending = f"{name}{PENDING}"

    def show(line: str) -> str | None:
        return None if UNRESTORED.match(line) else line.replace(pending, name)

    return show


def overrides(wanted: dict, current: dict) -> list[str]:
    """`-S key=value` for every value of `wanted` that `current` does not already have."""
    have = flatten(current)
    return [f"{k}={hydra_value(v)}" for k, v in flatten(wanted).items() if k not in have or have[k] != v]


def _is_dvc(pid) -> bool:
    """Whether process `pid` lives and runs DVC (its command line names dvc)."""
    try:
        return b"dvc" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError, TypeError):
        return False


def _dvc_lock_holders(root: Path) -> list[str]:
    """The commands that hold DVC's own repository lock now. An entry whose PID is no DVC process is stale (a dvc
    killed as a container's PID 1 left PID 1 there, which always exists): it is removed from the lock."""
    path = root / ".dvc" / "tmp" / "rwlock"
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return []
    holders, stale = set(), False
    for kind in ("read", "write"):
        for key, entries in list(info.get(kind, {}).items()):
            listed = entries if isinstance(entries, list) else [entries]
            live = [e for e in listed if isinstance(e, dict) and _is_dvc(e.get("pid"))]
            holders.update(f"PID {e['pid']}: {e.get('cmd', '?')}" for e in live)
            if len(live) < len(listed):
                stale = True
                if live:
                    info[kind][key] = live if isinstance(entries, list) else live[0]
                else:
                    del info[kind][key]
    if stale:
        path.write_text(json.dumps(info))
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


def validate(params: dict) -> None:
    """Check every section the stages read, so that a bad value stops the run before anything runs."""
    from dtrepro.params import (
        CollectParams,
        DownloadParams,
        EvalParams,
        RepairParams,
        StudyParams,
        TrainParams,
        check_params,
    )
    from dtrepro.registry.datasets import lookup

    study = StudyParams.from_params(params)
    check_params(study, params)
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


def run(
    root: Path, name: str, assignments: list[str], targets: list[str], dvc_args=(), capture: list | None = None
) -> int:
    """Run named run `name` as the DVC experiment `name`; return dvc's exit code. `dvc_args` go to `dvc exp run`,
    but for --pull: the remote's run entries and the objects they name are fetched first, checked
    (`remote.pull`), not by DVC's own pull, which checks nothing. With `capture`, its output is appended there too."""
    from dtrepro.pipeline import remote

    wanted = resolve(root, name, assignments)
    validate(wanted)
    check_git_identity(root)
    pulling, dvc_args = "--pull" in dvc_args, [a for a in dvc_args if a != "--pull"]
    with workspace_lock(root, name):
        sets = overrides(wanted, load_yaml(root / PARAMS_FILE))
        if pulling:
            print(f"named run: pulled {remote.pull(root, new_ok=True)}", flush=True)
        else:
            remote.check_local_runs(root)
        if not sets and not targets and dvc(root, "status", "--quiet", quiet=True).returncode == 0:
            print(
                f"named run: '{name}' changes nothing: params.yaml already holds its values and every stage is up to "
                f"date (dvc status), so no experiment was recorded. `dvc exp run -f` runs it again all the same.",
                flush=True,
            )
            return 0
        pending = f"{name}{PENDING}"  # the new run's name until it has succeeded: a failure loses no experiment
        dvc(root, "exp", "remove", pending, quiet=True)
        args = ["exp", "run", "-n", pending, *dvc_args, *(x for s in sets for x in ("-S", s)), *targets]
        print("named run:", " ".join(["dvc", *args]).replace(pending, name), flush=True)
        values = run_values(name, wanted)
        try:
            env = {RUN_VALUES: json.dumps(values)}
            code = dvc(root, *args, tee=[] if capture is None else capture, env=env, show=shown(name)).returncode
        except KeyboardInterrupt as err:
            what = (
                f"named run '{name}' stopped, and DVC with it once its running stage had stopped: that stage is not "
                f"recorded as done and left no temporary file; the stages finished before it are in dvc.lock and "
                f"the run-cache, and the earlier experiment '{name}', if any, is kept. `dtrepro run {name}` again "
                f"finishes the run, reusing what was finished."
            )
            print(interrupted_line(what, err), file=sys.stderr, flush=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        if code == 0:
            try:  # the values DVC recorded are the ones this run started with
                check_run_values(root / PARAMS_FILE, values)
            except DtreproError:
                dvc(root, "exp", "remove", pending, quiet=True)
                raise
            dvc(root, "exp", "remove", name, quiet=True)  # a run of the same name replaces the old one, now
            renamed = dvc(root, "exp", "rename", pending, name, quiet=True)
            if renamed.returncode:
                raise DtreproError(
                    f"The named run succeeded as the DVC experiment '{pending}', but renaming it to '{name}' failed "
                    f"({renamed.stderr.strip()}): `dvc exp rename {pending} {name}` does it."
                )
            print(f"named run: the experiment '{name}' holds this run", flush=True)
        else:
            print(f"named run: '{name}' failed; the earlier experiment '{name}', if any, is kept", flush=True)
        return code
