"""Progress bars that follow tqdm's own conventions, and stay out of logs.

Every bar is tqdm's with its defaults, so `TQDM_DISABLE=1`, `TQDM_MININTERVAL=5` and the other
`TQDM_*` variables set them. Where standard error is no terminal (DVC's and CI's logs, a file), a
bar would fill the log with carriage returns: it is off there unless `TQDM_DISABLE` says otherwise.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress(iterable=None, *, shown: bool = True, **kwargs) -> tqdm:
    """A tqdm bar; `shown=False` turns it off whatever the settings (a worker rank, a quiet caller)."""
    if not shown or ("TQDM_DISABLE" not in os.environ and not sys.stderr.isatty()):
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
