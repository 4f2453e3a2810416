"""Commands run in a repository: DVC and the stages, with this environment's tools and that repository's code.

A stage script must import the dtrepro of its own repository (`errors.check_own_package`): a clone, a
worktree of a cluster task or a test's copy runs its own src/, which is what DVC records as the stages'
deps. So every command run here gets that src/ first on PYTHONPATH, and this interpreter's bin folder
first on PATH, so that `dvc` and the stages' `python` are this environment's.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from dtrepro.runtime.errors import DtreproError, raise_terminated


def repo_env(root: Path, env: dict | None = None) -> dict[str, str]:
    """The environment of a command run in repository `root`."""
    env = dict(os.environ if env is None else env)
    python_path = [str(Path(root).resolve() / "src"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc(
    root: Path,
    *args: str,
    quiet: bool = False,
    tee: list | None = None,
    env: dict | None = None,
    show: Callable[[str], str | None] | None = None,
) -> subprocess.CompletedProcess:
    """Run dvc in `root`, its output shown (or captured, `quiet`; or shown and appended to `tee` too, each line
    shown as `show` rewrites it, or not at all where it gives None), with the entries of `env` added to its
    environment. A Ctrl-C or SIGTERM here reaches dvc and the stage it runs, and returns only once they have
    stopped (`forwarding_signals`)."""
    full = {**repo_env(root), **(env or {})}
    piped = quiet or tee is not None
    try:
        proc = subprocess.Popen(
            ["dvc", *args],
            cwd=root,
            env=full,
            stdout=subprocess.PIPE if piped else None,
            stderr=(subprocess.STDOUT if tee is not None else subprocess.PIPE) if piped else None,
            text=tee is None,  # teed output is decoded below, keeping a progress bar's carriage returns
            start_new_session=True,  # its own process group: the signals reach it through forwarding_signals only
            preexec_fn=_heed_sigint,
        )
    except FileNotFoundError:
        raise DtreproError("dvc is not installed in this environment: run `make install`.") from None
    with forwarding_signals(proc):
        if tee is None:
            out, err = proc.communicate()
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        for line in io.TextIOWrapper(proc.stdout, errors="replace", newline=""):
            shown = show(line) if show else line
            if shown is not None:
                print(shown, end="", flush=True)
            tee.append(line)
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(tee), "")


def _heed_sigint() -> None:
    """In the child before dvc starts: SIGINT's default action, even where this run was started with it ignored
    (`nohup dtrepro run ... &` from a script), so that `_stop_group`'s SIGINT stops dvc and its stage."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


GRACE_S = 60  # how long an interrupted command may take to stop (a stage removing its temporaries) before SIGKILL


@contextmanager
def forwarding_signals(proc: subprocess.Popen):
    """While the block runs, a SIGTERM is raised here as Ctrl-C is (`errors.Terminated`); either is passed on to
    `proc`'s process group as SIGINT (DVC stops its stage as after a Ctrl-C) and waited for, then re-raised."""
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    except KeyboardInterrupt:
        _stop_group(proc)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to the group, GRACE_S for it to stop, then SIGKILL to whatever of the group is left."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(GRACE_S)


def stages_ran(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def stages_restored(output: str) -> set[str]:
    """The stages it restored from DVC's run-cache instead of running them."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))
