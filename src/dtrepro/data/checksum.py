"""SHA-256 of files, read in chunks so that a multi-GB dataset never sits in memory, and the `<file>.sha256`
sidecar the source stage writes beside its dataset (`sha256sum -c` reads it)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dtrepro.runtime.atomic import atomic_output


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sidecar(path: str | os.PathLike, digest: str) -> None:
    """`<path>.sha256`: the digest and the file's name, as sha256sum writes them."""
    path = Path(path)
    with atomic_output(path.with_name(path.name + ".sha256")) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")
