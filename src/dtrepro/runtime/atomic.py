"""Outputs that appear whole or not at all.

Every file a stage declares is written to a temporary name in the same folder and
renamed into place only once it is complete, so a crash, a Ctrl-C or a failed
check never leaves a half-written output for DVC or a person to pick up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from dtrepro.runtime.errors import DtreproError, is_disk_full

WHERE_TO = "Give an output path in a folder you may write to, or change the folder's permissions."


def remove(path: str | os.PathLike) -> None:
    """Remove a file, a link or a folder, if there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error delete it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DtreproError(f"Cannot write {path}: its folder cannot be made ({err.strerror}). {WHERE_TO}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise DtreproError(f"Cannot write {path}: its folder {path.parent} is not writable by you. {WHERE_TO}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        remove(tmp)
        if isinstance(err, OSError) and is_disk_full(err) and not err.filename:  # name the output whose disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """As `atomic_output`, for a folder: yield an empty temporary folder beside `path`; on success it replaces
    `path` (and whatever was there), on error it is deleted."""
    path = Path(path)
    with atomic_output(path) as tmp:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            shutil.rmtree(path, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def outputs_together(*paths: str | os.PathLike) -> Iterator[None]:
    """A stage's outputs written one after another appear together or not at all: when the block fails, those of
    `paths` it had written already are removed again (DVC records the stage as not done either way)."""
    try:
        yield
    except BaseException:
        for path in paths:
            remove(path)
        raise


def require_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse, before writing, `what` (about `needed` bytes) in `folder` when its disk has less free."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise DtreproError(
            f"{what} needs about {needed / 2**20:,.0f} MiB in {folder}, but its disk has {free / 2**20:,.0f} MiB "
            f"free. Free space there, or point the output paths at a larger disk, then run again; nothing of this "
            f"stage's outputs was kept."
        )


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write `data` as indented JSON, atomically, with a trailing newline."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
