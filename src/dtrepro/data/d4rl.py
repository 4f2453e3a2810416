"""The D4RL gym-mujoco HDF5 layout: reading with validation, writing.

A D4RL file holds flat arrays of N rows: `observations` (N, obs_dim), `actions`
(N, act_dim), `rewards` (N,), `terminals` (N,), and from v1 on `timeouts` (N,);
optionally `next_observations` and `infos/qpos`, `infos/qvel`, ... We read every
dataset of the file, check what the rest of the pipeline relies on, and write
files any D4RL reader can open, byte-identical for identical inputs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from dtrepro.runtime.errors import DtreproError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
FLAG_KEYS = ("terminals", "timeouts")
FLOAT_KEYS = ("observations", "actions", "rewards")
# dimensions of each per-row dataset (rewards of shape (N, 1) are flattened first)
RANKS = {
    "observations": 2,
    "actions": 2,
    "rewards": 1,
    "terminals": 1,
    "timeouts": 1,
    "next_observations": 2,
    "infos/qpos": 2,
    "infos/qvel": 2,
}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class D4RLData:
    """All datasets of a D4RL file by their HDF5 path, plus the file's metadata attributes."""

    arrays: dict[str, np.ndarray]
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.arrays["rewards"])

    @property
    def has_timeouts(self) -> bool:
        return "timeouts" in self.arrays


def as_v0_layout(data: D4RLData) -> D4RLData:
    """The same rows as D4RL's old v0 files held them: no `timeouts`, no `next_observations`, no infos."""
    keep = {k: v for k, v in data.arrays.items() if k in REQUIRED_KEYS}
    return D4RLData(keep, {**data.metadata, "layout": "v0"})


def require_regular_file(path: str | os.PathLike, what: str = "Input file") -> Path:
    """`path` if it is a regular file this process can read; else one paragraph saying what it is instead.

    A directory, a FIFO (which would block the reader forever) or a device is refused before it is opened.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DtreproError(
            f"{what} {path} does not exist. Run the stage before it (dvc repro) or give its path."
        ) from None
    except OSError as err:
        raise DtreproError(f"{what} {path} cannot be examined ({err.strerror}).") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise DtreproError(f"{what} {path} is {kind}; give the path of a regular file.")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise DtreproError(
            f"{what} {path} cannot be read ({err.strerror}); check its permissions, or run as a user who may read it."
        ) from None
    return path


def is_hdf5(path: str | os.PathLike) -> bool:
    """True when the file starts with the HDF5 signature (HDF5 files written by h5py do)."""
    with open(path, "rb") as fh:
        return fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def _describe_start(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(200)
    if not head:
        return "the file is empty"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page, not data (a login, error or redirect page saved in its place)"
    return f"it does not start with the HDF5 signature (first bytes: {head[:16]!r})"


def check_d4rl_file(path: str | os.PathLike) -> None:
    """Raise a `DtreproError` unless `path` opens as HDF5 and holds D4RL's required keys."""
    path = Path(path)
    if not is_hdf5(path):
        raise DtreproError(
            f"{path} is not an HDF5 file: {_describe_start(path)}. A D4RL dataset is an "
            f"HDF5 file with {', '.join(REQUIRED_KEYS)}; check the URL or path (data.url)."
        )
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
    except (OSError, RuntimeError) as err:
        raise DtreproError(
            f"{path} has the HDF5 signature but cannot be read ({err}); it is truncated "
            f"or corrupt. Delete it and download or copy it again."
        ) from None
    if missing:
        raise DtreproError(
            f"{path} is HDF5 but not in D4RL layout: it lacks {', '.join(missing)}. "
            f"Expected datasets {', '.join(REQUIRED_KEYS)} (plus timeouts from v1 on)."
        )


def read_d4rl(path: str | os.PathLike) -> D4RLData:
    """Read every dataset of a D4RL-layout file and validate it (see `validate`)."""
    path = require_regular_file(path)
    check_d4rl_file(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            check_fits_memory(f, path)
            metadata = {k: _plain(v) for k, v in f.attrs.items()}
            if "metadata" in f and isinstance(f["metadata"], h5py.Group):
                metadata.update({k: _plain(v) for k, v in f["metadata"].attrs.items()})

            def visit(name: str, obj: object) -> None:
                if isinstance(obj, h5py.Dataset) and not name.startswith("metadata"):
                    arrays[name] = obj[()]

            f.visititems(visit)
    except (OSError, RuntimeError) as err:
        raise DtreproError(
            f"{path} cannot be read past its header ({err}); it is truncated or corrupt. "
            f"Delete it and download or copy it again."
        ) from None
    data = D4RLData(arrays, metadata)
    validate(data, path)
    return data


def check_fits_memory(f: h5py.File, path) -> None:
    """Refuse, before reading, a file whose datasets declare more bytes than this machine has free: a compressed
    file can declare terabytes in a few kilobytes, and reading it would be killed for memory, not refused."""
    import psutil

    sizes = []
    f.visititems(
        lambda name, obj: sizes.append(obj.size * obj.dtype.itemsize) if isinstance(obj, h5py.Dataset) else None
    )
    declared, free = sum(sizes), psutil.virtual_memory().available
    if declared > free:
        raise DtreproError(
            f"{path} declares datasets of {declared / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB of memory "
            f"free here (D4RL's largest file holds about 1.5 GiB). It is not the dataset it claims to be, or this "
            f"machine is too small for it: check the file (h5ls -r), or run on a larger machine."
        )


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def validate(data: D4RLData, path: str | os.PathLike) -> None:
    """Check shapes, lengths, dtypes and finiteness; raise one paragraph naming the file and the problem."""
    a = data.arrays
    missing = [k for k in REQUIRED_KEYS if k not in a]
    if missing:
        raise DtreproError(f"{path} lacks the D4RL dataset(s) {', '.join(missing)}.")
    if a["rewards"].ndim == 2 and a["rewards"].shape[1] == 1:
        a["rewards"] = a["rewards"][:, 0]
    for key, ndim in RANKS.items():
        if key in a and a[key].ndim != ndim:
            raise DtreproError(
                f"{path}: '{key}' has shape {a[key].shape}; D4RL layout needs {ndim} dimension(s) (rows first)."
            )
    n = len(a["rewards"])
    if n == 0:
        raise DtreproError(f"{path} holds no rows: 'rewards' is empty. Use a non-empty dataset.")
    for key in ("observations", "actions", "next_observations", "infos/qpos", "infos/qvel"):
        if key in a and a[key].shape[1] == 0:
            raise DtreproError(f"{path}: '{key}' has shape {a[key].shape}: rows of width 0 hold nothing to learn from.")
    ragged = {
        k: len(v)
        for k, v in a.items()
        if k in REQUIRED_KEYS + ("timeouts", "next_observations") or k.startswith("infos/")
    }
    if len(set(ragged.values())) > 1:
        raise DtreproError(
            f"{path} has datasets of unequal length ({', '.join(f'{k}={v}' for k, v in ragged.items())}); "
            f"every per-row dataset must have the same number of rows. The file is damaged or was cut "
            f"while being written."
        )
    if "next_observations" in a and a["next_observations"].shape != a["observations"].shape:
        raise DtreproError(
            f"{path}: 'next_observations' has shape {a['next_observations'].shape}, "
            f"not that of 'observations' {a['observations'].shape}."
        )
    for key in FLOAT_KEYS + tuple(k for k in ("next_observations",) if k in a):
        if a[key].dtype not in (np.float32, np.float64):
            raise DtreproError(
                f"{path}: '{key}' has dtype {a[key].dtype}; D4RL layout needs float32 or float64 (float16 rounds "
                f"states too coarsely to tell consecutive rows apart). Convert the dataset to float32."
            )
        bad = ~np.isfinite(a[key])
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise DtreproError(
                f"{path}: '{key}' holds {int(bad.sum())} NaN or infinite value(s) in {len(rows)} row(s), "
                f"first at row {int(rows[0])}. Such rows cannot be trained on; fix or re-create the dataset."
            )
    for key in FLAG_KEYS:
        if key not in a:
            continue
        flags = a[key]
        if flags.dtype == bool:
            continue
        if not (np.issubdtype(flags.dtype, np.number) and np.isin(flags, (0, 1)).all()):
            raise DtreproError(
                f"{path}: '{key}' has dtype {flags.dtype} with values other than 0 and 1; D4RL flags are boolean."
            )
        a[key] = flags.astype(bool)


def write_d4rl(path: str | os.PathLike, data: D4RLData) -> None:
    """Write `data` in D4RL layout (gzip-free, no timestamps: same data, same bytes).

    The caller writes to a temporary path (see `dtrepro.runtime.atomic`); metadata goes to
    the attributes of a `metadata` group.
    """
    with h5py.File(path, "w", track_order=True) as f:
        for name in sorted(data.arrays):
            group_name, _, leaf = name.rpartition("/")
            group = f.require_group(group_name) if group_name else f
            group.create_dataset(leaf, data=data.arrays[name], track_times=False)
        meta = f.create_group("metadata", track_order=True)
        for key in sorted(data.metadata):
            value = data.metadata[key]
            meta.attrs[key] = "" if value is None else value
