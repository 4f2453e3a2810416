from __future__ import annotations

import os

from dtrepro.runtime.threads import thread_settings

os.environ.update(thread_settings())  # the stages' threads and BLAS kernels, before numpy and torch load

import signal  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from dtrepro.data.d4rl import write_d4rl  # noqa: E402

from helpers import copy_repo  # noqa: E402
from support.hopper import hopper_dataset  # noqa: E402

# run in the background by a script (`cmd &`), the suite inherits an ignored SIGINT, and so would every process it
# starts: the tests that stop stages with Ctrl-C take SIGINT's own behaviour back, as in a terminal
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def hopper():
    """(data, true terminals, true timeouts) of a real Hopper-v4 dataset; see support.hopper."""
    return hopper_dataset()


@pytest.fixture(scope="session")
def hopper_file(hopper, tmp_path_factory):
    path = tmp_path_factory.mktemp("hopper") / "hopper-v2.hdf5"
    write_d4rl(path, hopper[0])
    return path


@pytest.fixture
def repo_copy(tmp_path):
    return copy_repo(tmp_path)


@pytest.fixture(scope="session")
def smoke_done(tmp_path_factory):
    """A copy of the repository after the named smoke run, committed, with that run's output: copy it (`copy_done`)
    before changing it."""
    import sys
    from types import SimpleNamespace

    from helpers import run

    repo = copy_repo(tmp_path_factory.mktemp("smoke-done"))
    proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke"], repo, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "the smoke run"]):
        assert run(cmd, repo).returncode == 0
    return SimpleNamespace(repo=repo, output=proc.stdout)


@pytest.fixture
def copy_done(smoke_done, tmp_path):
    """A private copy of `smoke_done`, its git history and DVC cache included."""
    import shutil

    return Path(shutil.copytree(smoke_done.repo, tmp_path / "repo", symlinks=True))
