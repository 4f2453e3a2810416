"""Scratch repositories for the tests and benchmarks: a committed copy of the working tree, commands run in it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dtrepro.pipeline.commands import repo_env

ROOT = Path(__file__).resolve().parents[2]  # this checkout
IDENTITY = {"user.name": "dtrepro-test", "user.email": "test@localhost"}


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    """Run in a repository with its own code and this environment's tools (`repo_env`), capturing text output."""
    env = {**repo_env(cwd), **kw.pop("env", {})}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)


def copy_repo(parent: Path) -> Path:
    """A fresh git repository holding the working tree (tracked and untracked, not ignored files), committed."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    dest = parent / "repo"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    for key, value in IDENTITY.items():  # DVC commits every experiment: the copy has an author of its own
        subprocess.run(["git", "config", key, value], cwd=dest, check=True)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def one_line(text: str) -> str:
    """A message as one line: errors are wrapped to the terminal's width."""
    return " ".join(text.split())
