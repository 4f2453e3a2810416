"""What the tests share: the repository root, subprocess runs, a temporary git copy, params.yaml's values."""

from __future__ import annotations

from pathlib import Path

from dtrepro.params import load_yaml, merge
from dtrepro.pipeline.commands import stages_ran, stages_restored  # noqa: F401 -- what a DVC run's output says

from support.repos import IDENTITY, copy_repo, one_line, run  # noqa: F401 -- the tests' helpers, in one place

ROOT = Path(__file__).resolve().parents[1]
HOPPER = "hopper-medium-v2"  # the default dataset
COLLECTED = "collected-hopper-medium"  # the smoke and demo runs' dataset


def params(**overrides: dict) -> dict:
    """params.yaml's content with some sections' values replaced, e.g. params(repair={"dt": 0.01})."""
    return merge(load_yaml(ROOT / "params.yaml"), overrides)
