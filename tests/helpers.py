"""What the tests share: the repository root, subprocess runs, a temporary git copy, params.yaml's values."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dtrepro.params import load_yaml, merge

ROOT = Path(__file__).resolve().parents[1]
HOPPER = "hopper-medium-v2"  # the default dataset
COLLECTED = "collected-hopper-medium"  # the smoke and demo runs' dataset
IDENTITY = {"user.name": "dtrepro-test", "user.email": "test@localhost"}


def params(**overrides: dict) -> dict:
    """params.yaml's content with some sections' values replaced, e.g. params(repair={"dt": 0.01})."""
    return merge(load_yaml(ROOT / "params.yaml"), overrides)


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    """Run with this interpreter's bin folder first on PATH (as `make` does), capturing text output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **kw.pop("env", {})}
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
