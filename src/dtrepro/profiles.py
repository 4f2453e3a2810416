"""Named sets of parameter overrides, applied for the length of one command.

`profiles/NAME.yaml` holds a partial params.yaml. `run` writes params.yaml with
the profile (and any `-S key=value`) merged in, runs the command (normally
`dvc repro`), then puts the original params.yaml back byte for byte. DVC thus
sees, caches and records in dvc.lock the values the run really used, while the
tracked params.yaml stays the real reproduction. A copy of the original is kept
in `.params.yaml.orig` while the command runs, and a run killed before it could
restore is repaired at the start of the next one.

    python -m dtrepro.profiles run smoke -- dvc repro
    python -m dtrepro.profiles run smoke -S data.url=/data/hopper.hdf5 -- dvc repro
    python -m dtrepro.profiles show demo
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from dtrepro.atomic import atomic_output
from dtrepro.errors import DtreproError, run_stage
from dtrepro.params import PARAMS_FILE, load_yaml, merge, parse_assignment

PROFILES_DIR = "profiles"


def available(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml"))


def resolve(root: Path, name: str, assignments: list[str]) -> dict:
    """params.yaml with profile `name` (or none, for 'default') and the assignments merged in."""
    params = load_yaml(root / PARAMS_FILE)
    if name != "default":
        path = root / PROFILES_DIR / f"{name}.yaml"
        if not path.exists():
            raise DtreproError(
                f"No profile '{name}': {path} does not exist. Profiles: {['default'] + available(root)}."
            )
        params = merge(params, load_yaml(path))
    for text in assignments:
        params = merge(params, parse_assignment(text))
    return params


def _write(path: Path, text: str | bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(text if isinstance(text, bytes) else text.encode())


def restore_interrupted(root: Path) -> bool:
    """Put back params.yaml from a run that was killed before it could; True if it did."""
    backup = root / f".{PARAMS_FILE}.orig"
    if not backup.exists():
        return False
    _write(root / PARAMS_FILE, backup.read_bytes())
    backup.unlink()
    print(f"profiles: restored {PARAMS_FILE} left modified by an interrupted profile run", file=sys.stderr)
    return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(root: Path, name: str, assignments: list[str], command: list[str]) -> int:
    """Run `command` in `root` with the profile applied to params.yaml; return its exit code."""
    restore_interrupted(root)
    params_path, backup = root / PARAMS_FILE, root / f".{PARAMS_FILE}.orig"
    merged = resolve(root, name, assignments)
    original = params_path.read_bytes()
    _write(backup, original)
    header = f"# params.yaml with profile '{name}' applied; the original is restored when the run ends\n"
    _write(params_path, header + yaml.safe_dump(merged, sort_keys=False))
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # this interpreter's bin folder first, so that dvc and the stages' `python` are the same environment's
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    child = None
    try:
        child = subprocess.Popen(command, cwd=root, env=env)
        return child.wait()
    except FileNotFoundError:
        raise DtreproError(
            f"Command not found: {command[0]}. Install it (make install) or give its full path."
        ) from None
    except KeyboardInterrupt:
        if child is not None:
            child.send_signal(signal.SIGINT)
            child.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        _write(params_path, original)
        backup.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dtrepro.profiles", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    sub = parser.add_subparsers(dest="verb", required=True)
    show = sub.add_parser("show", help="print params.yaml as the profile would make it")
    show.add_argument("name")
    show.add_argument("-S", "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("list", help="list the profiles")
    go = sub.add_parser("run", help="run a command with the profile applied")
    go.add_argument("name")
    go.add_argument("-S", "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    go.epilog = "The command comes after --, e.g. `run smoke -- dvc repro`."
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    root = args.root.resolve()
    if args.verb == "list":
        print("\n".join(["default"] + available(root)))
    elif args.verb == "show":
        print(yaml.safe_dump(resolve(root, args.name, args.assignments), sort_keys=False), end="")
    else:
        if not command:
            raise DtreproError("No command given: write it after --, e.g. `... run smoke -- dvc repro`.")
        code = run(root, args.name, args.assignments, command)
        if code:
            sys.exit(code)


if __name__ == "__main__":
    run_stage(main)
