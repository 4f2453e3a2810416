"""Every kind of bad input gets one clear paragraph, exit status 2, no traceback, and no output left behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)


def good(n=50):
    rng = np.random.default_rng(0)
    return dict(
        observations=rng.normal(size=(n, 11)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
    )


def with_nan():
    d = good()
    d["observations"][7, 3] = np.nan
    return d


def with_inf():
    d = good()
    d["rewards"][3] = np.inf
    return d


def make_truncated(path: Path, tmp: Path):
    write(tmp / "whole.hdf5", **good(20000))
    whole = (tmp / "whole.hdf5").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


CASES = {
    "missing_key": (lambda p, t: write(p, **{k: v for k, v in good().items() if k != "actions"}), "lacks actions"),
    "ragged": (lambda p, t: write(p, **{**good(), "actions": good(49)["actions"]}), "unequal length"),
    "nan": (lambda p, t: write(p, **with_nan()), "NaN or infinite value.*first at row 7"),
    "inf": (lambda p, t: write(p, **with_inf()), "'rewards' holds 1 NaN or infinite"),
    "wrong_dtype": (lambda p, t: write(p, **{**good(), "observations": np.ones((50, 11), np.int32)}), "dtype int32"),
    "bad_flags": (
        lambda p, t: write(p, **{**good(), "terminals": np.full(50, 2, np.int64)}),
        "values other than 0 and 1",
    ),
    "wrong_shape": (lambda p, t: write(p, **{**good(), "observations": np.ones(50, np.float32)}), "shape"),
    "no_rows": (lambda p, t: write(p, **good(0)), "holds no rows"),
    "empty_file": (lambda p, t: p.write_bytes(b""), "the file is empty"),
    "not_hdf5": (lambda p, t: p.write_text("observations,actions\n1,2\n"), "not an HDF5 file"),
    "html": (lambda p, t: p.write_text("<!DOCTYPE html><html>Not found</html>"), "HTML page"),
    "truncated": (make_truncated, "truncated or corrupt"),
    "absent": (lambda p, t: None, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_repair_stage_refuses_bad_input_cleanly(case, tmp_path):
    make, expected = CASES[case]
    raw = tmp_path / "raw.hdf5"
    make(raw, tmp_path)
    out, report = tmp_path / "out" / "clean.hdf5", tmp_path / "out" / "repair.json"
    proc = subprocess.run(
        [sys.executable, "stages/repair.py", "--input", str(raw), "--output", str(out), "--report", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and str(raw) in proc.stderr.replace("\n", " ")
    assert len(proc.stderr.strip().split("\n\n")) == 1  # one paragraph
    assert re.search(expected, " ".join(proc.stderr.split())), proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # not even a temporary file
