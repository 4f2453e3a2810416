"""One error type for problems a user can fix, and the stage-script guard that prints it.

A `DtreproError` carries a single paragraph that says what went wrong, where, and
what to do. Stage scripts run their `main` through `run_stage`, which prints that
paragraph (no traceback) and exits non-zero.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class DtreproError(Exception):
    """A problem with the input or the environment that the user can act on."""


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
    try:
        check_own_package()
        main(argv)
    except DtreproError as err:
        message = " ".join(str(err).split())
        print(
            textwrap.fill(f"error: {message}", width=100, break_long_words=False, break_on_hyphens=False),
            file=sys.stderr,
        )
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
