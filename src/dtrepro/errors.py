"""One error type for problems a user can fix, and the stage-script guard that prints it.

A `DtreproError` carries a single paragraph that says what went wrong, where, and
what to do. Stage scripts run their `main` through `run_stage`, which prints that
paragraph (no traceback) and exits non-zero.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class DtreproError(Exception):
    """A problem with the input or the environment that the user can act on."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C's SIGINT is: every `finally` and cleanup runs."""


def raise_terminated(signum, frame):
    """The SIGTERM handler that raises `Terminated`."""
    raise Terminated(signal.Signals(signum).name)


def raise_on_sigterm() -> None:
    """From now on a SIGTERM (Slurm's scancel, `kill`, a container stopping) stops this process as Ctrl-C does,
    removing its temporaries, instead of killing it where it stands."""
    signal.signal(signal.SIGTERM, raise_terminated)


def quiet_interrupts() -> None:
    """A Ctrl-C that reaches the top of a program (while a stage script is still importing torch, before
    `run_stage` runs) ends it with one line instead of a traceback of the import machinery; one that lands inside
    an import is raised once the import ends (`_interrupt_outside_imports`)."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            print(
                interrupted_line(f"{Path(sys.argv[0]).name} stopped while starting; nothing was written.", value),
                file=sys.stderr,
            )
        else:
            previous(kind, value, traceback)

    sys.excepthook = hook
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where a parent ignores it
        signal.signal(signal.SIGINT, _interrupt_outside_imports)


DEFER_LIMIT_S = 10.0  # an import that hangs longer is interrupted where it stands
_resending = threading.Event()
_deferred_since: float | None = None


def _interrupt_outside_imports(signum, frame):
    """SIGINT's handler: KeyboardInterrupt, as Python's own, except inside an import. Raised there (a stage spends
    its first seconds importing torch, numpy, h5py), extension modules' C initialisation loses it (torch imports
    numpy from C and clears the error, numpy.random's Cython modules too: the program goes on) or aborts on it
    (pybind11 calls std::terminate); so there the signal is sent again a moment later, until it lands outside."""
    global _deferred_since
    now = time.monotonic()
    since = now if _deferred_since is None else _deferred_since
    if not _importing(frame) or now - since > DEFER_LIMIT_S:
        _deferred_since = None
        signal.default_int_handler(signum, frame)
    _deferred_since = since
    if not _resending.is_set():
        _resending.set()
        threading.Thread(target=_resend, args=(signum,), daemon=True).start()


def _importing(frame) -> bool:
    while frame is not None:
        if "importlib" in frame.f_code.co_filename and "_bootstrap" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _resend(signum: int) -> None:
    time.sleep(0.02)
    _resending.clear()
    if _deferred_since is not None:
        os.kill(os.getpid(), signum)


def raise_deferred_interrupt() -> None:
    """Raise the Ctrl-C that came while the program was importing and has not been raised yet (a short program
    can end before it lands outside an import)."""
    global _deferred_since
    if _deferred_since is not None:
        _deferred_since = None
        raise KeyboardInterrupt


def _say(message: str) -> None:
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


def check_own_package() -> None:
    """A stage script of a repository must run that repository's src/, the code DVC tracks as its deps, not another
    dtrepro that the environment happens to import (a copy with the same files, as DVC's queue makes, is fine)."""
    from dtrepro.closure import closure

    script = Path(sys.argv[0]).resolve()
    own, running = script.parents[1] / "src", Path(__file__).resolve().parents[1]
    if not (own / "dtrepro").is_dir() or own.resolve() == running:
        return
    differ = [p for p in closure(script) if p.parts[0] == "src" and not _same(own.parent / p, running.parent / p)]
    if differ:
        raise DtreproError(
            f"{sys.argv[0]} belongs to the repository with the code {own}, but this Python imports dtrepro from "
            f"{running}, whose {differ[0]} differs: DVC would record one code and run another. Run with "
            f"PYTHONPATH={own} (as `dtrepro run` and the image do), or install this checkout (pip install -e .)."
        )


def _same(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's `main`, turning a `DtreproError` into one paragraph on stderr and exit 2."""
    from dtrepro.params import check_run_values

    raise_on_sigterm()
    try:
        check_own_package()
        check_run_values()
        raise_deferred_interrupt()
        main(argv)
        raise_deferred_interrupt()
        check_run_values()  # a stage that ran while its values changed is not recorded as done
    except DtreproError as err:
        _say(str(err))
        sys.exit(EXIT_USER_ERROR)
    except OSError as err:
        if not is_disk_full(err):
            raise
        _say(disk_full_paragraph(err))
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as err:
        what = (
            f"{Path(sys.argv[0]).name} stopped before it finished; the outputs it had not finished were not written "
            f"(their temporary files removed) and DVC records the stage as not done. The next `dvc repro` or named "
            f"run runs it again; a train stage resumes from its last resume state."
        )
        print(interrupted_line(what, err), file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
