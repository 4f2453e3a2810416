from __future__ import annotations

import sys
from pathlib import Path

from dtrepro.cpus import set_thread_defaults

set_thread_defaults()  # the stages' thread choice, before anything loads torch: durations stop depending on load

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from dtrepro.data.d4rl import write_d4rl  # noqa: E402

from helpers import copy_repo  # noqa: E402
from hopper import hopper_dataset  # noqa: E402


@pytest.fixture(scope="session")
def hopper():
    """(data, true terminals, true timeouts) of a real Hopper-v4 dataset; see tests/hopper.py."""
    return hopper_dataset()


@pytest.fixture(scope="session")
def hopper_file(hopper, tmp_path_factory):
    path = tmp_path_factory.mktemp("hopper") / "hopper-v2.hdf5"
    write_d4rl(path, hopper[0])
    return path


@pytest.fixture
def repo_copy(tmp_path):
    return copy_repo(tmp_path)
