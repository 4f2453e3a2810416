"""How a stage script runs: its process settings, its signals, and the guard that turns a problem into a paragraph.

A stage script calls `setup()` before it imports numpy or torch (OpenMP and OpenBLAS read their settings
when they load), then runs its `main` through `run_stage`: a `DtreproError` or a full disk prints one
paragraph and exits 2; Ctrl-C or SIGTERM removes the temporaries and exits 130. Importing `dtrepro` as a
library does none of this.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from dtrepro.params import check_run_values
from dtrepro.runtime.errors import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    DtreproError,
    disk_full_paragraph,
    interrupted_line,
    is_disk_full,
    raise_terminated,
    say,
)
from dtrepro.runtime.threads import thread_settings


def setup() -> None:
    """The stage's threads and BLAS kernels (`runtime.threads`), and a quiet Ctrl-C while it imports. A bad
    DTREPRO_CPUS is left for `run_stage` to refuse, with its paragraph."""
    try:
        os.environ.update(thread_settings())
    except DtreproError:
        pass
    quiet_interrupts()


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


def check_own_package() -> None:
    """A stage script of a repository must run that repository's src/, the code DVC tracks as its deps, not another
    dtrepro that the environment happens to import (a copy with the same files, as DVC's queue makes, is fine)."""
    script = Path(sys.argv[0]).resolve()
    own, running = script.parents[1] / "src" / "dtrepro", Path(__file__).resolve().parents[1]
    if not own.is_dir() or own.resolve() == running:
        return
    differ = [p for p in sorted(own.rglob("*.py")) if not _same(p, running / p.relative_to(own))]
    if differ:
        raise DtreproError(
            f"{sys.argv[0]} belongs to the repository with the code {own.parent}, but this Python imports dtrepro "
            f"from {running.parent}, whose {differ[0].relative_to(own.parents[1])} differs: DVC would record one code "
            f"and run another. Run with PYTHONPATH={own.parent} (as `dtrepro run` and the image do), or install this "
            f"checkout (pip install -e .)."
        )


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and a.read_bytes() == b.read_bytes()


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's `main`, turning a `DtreproError` into one paragraph on stderr and exit 2."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        thread_settings()  # a DTREPRO_CPUS that `setup` could not use is refused here, with its paragraph
        check_own_package()
        check_run_values()
        raise_deferred_interrupt()
        main(argv)
        raise_deferred_interrupt()
        check_run_values()  # a stage that ran while its values changed is not recorded as done
    except DtreproError as err:
        say(str(err))
        sys.exit(EXIT_USER_ERROR)
    except OSError as err:
        if not is_disk_full(err):
            raise
        say(disk_full_paragraph(err))
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as err:
        what = (
            f"{Path(sys.argv[0]).name} stopped before it finished; the outputs it had not finished were not written "
            f"(their temporary files removed) and DVC records the stage as not done. The next `dvc repro` or named "
            f"run runs it again; a train stage resumes from its last resume state."
        )
        print(interrupted_line(what, err), file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
