"""Commands run in a repository: DVC and the stages, with this environment's tools and that repository's code.

A stage script must import the dtrepro of its own repository (`errors.check_own_package`): a clone, a
worktree of a cluster task or a test's copy runs its own src/, which is what DVC records as the stages'
deps. So every command run here gets that src/ first on PYTHONPATH, and this interpreter's bin folder
first on PATH, so that `dvc` and the stages' `python` are this environment's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dtrepro.errors import DtreproError


def repo_env(root: Path, env: dict | None = None) -> dict[str, str]:
    """The environment of a command run in repository `root`."""
    env = dict(os.environ if env is None else env)
    python_path = [str(Path(root).resolve() / "src"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc(root: Path, *args: str, quiet: bool = False, tee: list | None = None) -> subprocess.CompletedProcess:
    """Run dvc in `root`, its output shown (or captured, `quiet`; or shown and appended to `tee` too)."""
    try:
        if tee is None:
            return subprocess.run(["dvc", *args], cwd=root, env=repo_env(root), capture_output=quiet, text=True)
        with subprocess.Popen(
            ["dvc", *args], cwd=root, env=repo_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            for line in proc.stdout:
                print(line, end="", flush=True)
                tee.append(line)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(tee), "")
    except FileNotFoundError:
        raise DtreproError("dvc is not installed in this environment: run `make install`.") from None


def stages_ran(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def stages_restored(output: str) -> set[str]:
    """The stages it restored from DVC's run-cache instead of running them."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))
