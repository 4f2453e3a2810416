"""One error type for problems a user can fix, and the paragraphs a stopped stage prints.

A `DtreproError` carries a single paragraph that says what went wrong, where, and what to do;
`runtime.stage.run_stage` prints it (no traceback) and exits with status 2.
"""

from __future__ import annotations

import errno
import shutil
import signal
import sys
import textwrap
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class DtreproError(Exception):
    """A problem with the input or the environment that the user can act on."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C's SIGINT is: every `finally` and cleanup runs."""


def raise_terminated(signum, frame):
    """The SIGTERM handler that raises `Terminated`."""
    raise Terminated(signal.Signals(signum).name)


def say(message: str) -> None:
    message = " ".join(message.split())
    print(
        textwrap.fill(f"error: {message}", width=100, break_long_words=False, break_on_hyphens=False), file=sys.stderr
    )


def is_disk_full(err: OSError) -> bool:
    """ENOSPC, as the OS gives it or as h5py and torch word it."""
    return err.errno == errno.ENOSPC or "No space left on device" in str(err) or "errno = 28" in str(err)


def disk_full_paragraph(err: OSError) -> str:
    """What a stage says when its disk fills: the folder, the space there, what to do."""
    folder = Path(err.filename).resolve().parent if getattr(err, "filename", None) else Path.cwd()
    free = shutil.disk_usage(folder).free / 2**20 if folder.exists() else float("nan")
    return (
        f"The disk holding {folder} is full ({free:.0f} MiB free now): {Path(sys.argv[0]).name} stopped and wrote no "
        f"output (its temporary files removed). Free space there (a D4RL file takes up to 1.5 GiB, a collected or "
        f"repaired one about as much, a checkpoint a few MiB to 100 MiB), or point the output paths at a larger "
        f"disk, then run again."
    )


def interrupted_line(what: str, err: KeyboardInterrupt) -> str:
    """The line an interrupted stage or named run ends with: what stopped it and what was (not) written."""
    cause = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C (SIGINT)"
    return f"interrupted by {cause}: {what}"
