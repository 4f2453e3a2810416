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

from dtrepro.errors import DtreproError, is_disk_full

WHERE_TO = "Give an output path in a folder you may write to, or change the folder's permissions."


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
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
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


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write `data` as indented JSON, atomically, with a trailing newline."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
