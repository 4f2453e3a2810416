from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dtrepro.data.d4rl import write_d4rl  # noqa: E402

from hopper import hopper_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def hopper():
    """(data, true terminals, true timeouts) of a real Hopper-v4 dataset; see tests/hopper.py."""
    return hopper_dataset()


@pytest.fixture(scope="session")
def hopper_file(hopper, tmp_path_factory):
    path = tmp_path_factory.mktemp("hopper") / "hopper-v2.hdf5"
    write_d4rl(path, hopper[0])
    return path


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    """Run with this interpreter's bin folder first on PATH (as `make` does), capturing text output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)


def copy_repo(parent: Path) -> Path:
    """A fresh git clone-like copy of the working tree (tracked and untracked, not ignored files)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    dest = parent / "repo"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.name=dtrepro-test", "-c", "user.email=test@localhost"]
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], git + ["commit", "-q", "-m", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


@pytest.fixture
def repo_copy(tmp_path):
    return copy_repo(tmp_path)
