"""What the benchmarks share: a large Hopper-like dataset built from real Hopper-v4 rows, the paper preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dtrepro.data.d4rl import D4RLData, as_v0_layout, write_d4rl
from dtrepro.data.repair import repair_file
from dtrepro.params import RepairParams, TrainParams
from dtrepro.pipeline.named_runs import resolve

from support.hopper import concatenate, hopper_dataset

ROOT = Path(__file__).resolve().parents[1]
HOPPER = "hopper-medium-v2"  # the dataset whose facts the benchmarks' data stand for


def hopper_like(rows: int) -> tuple[D4RLData, np.ndarray]:
    """The tests' real Hopper-v4 dataset repeated to `rows` rows in v0 layout, and its true episode ends."""
    piece, terminals, timeouts = hopper_dataset()
    reps = -(-rows // piece.rows)
    data = concatenate([as_v0_layout(piece)] * reps)
    data.arrays = {k: v[:rows] for k, v in data.arrays.items()}
    truth = np.tile(terminals | timeouts, reps)[:rows]
    truth[-1] = True  # the last piece is cut by the file's end
    return data, truth


def clean_hopper_file(folder: Path, rows: int) -> tuple[Path, D4RLData]:
    """`hopper_like(rows)` written to `folder` and repaired: the clean file a training run reads, and the data."""
    data, _ = hopper_like(rows)
    write_d4rl(folder / "raw.hdf5", data)
    rules = RepairParams.from_params(ROOT / "params.yaml", HOPPER)
    repair_file(folder / "raw.hdf5", folder / "clean.hdf5", folder / "repair.json", rules)
    return folder / "clean.hdf5", data


def preset_params(profile: str = "paper", **train) -> TrainParams:
    """The `paper` named run's (or `profile`'s) model and train params, with some train (or run: device,
    log_every) values replaced."""
    values = resolve(ROOT, profile, [])
    values["run"].update({"device": "cpu", **{k: train.pop(k) for k in ("device", "log_every") if k in train}})
    values["train"].update(**train)
    return TrainParams.from_params(values, HOPPER)
