"""One error type for problems a user can fix, and the stage-script guard that prints it.

A `DtreproError` carries a single paragraph that says what went wrong, where, and
what to do. Stage scripts run their `main` through `run_stage`, which prints that
paragraph (no traceback) and exits non-zero.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class DtreproError(Exception):
    """A problem with the input or the environment that the user can act on."""


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's `main`, turning a `DtreproError` into one paragraph on stderr and exit 2."""
    try:
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
