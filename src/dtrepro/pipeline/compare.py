"""`dtrepro compare`: the last commit and its experiments side by side, only what differs between them.

`dvc exp show` lists every param and metric of every experiment in a column of its own, which for a named
run is dozens of columns: in 80 columns it shows one. Here each param or metric is a row and each
experiment a column, so a few experiments fit a screen (more wrap into further blocks); a param with the
same value in every experiment is left out, and such metrics are listed once below. `--all` keeps every key.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from dtrepro.params import flatten
from dtrepro.pipeline.commands import dvc
from dtrepro.runtime.errors import DtreproError

WIDTH = 80  # a terminal's default
CELL = 24  # the widest a value's column grows


def experiments(root: Path) -> dict[str, dict[str, dict]]:
    """name -> {"params": {key: value}, "metrics": {key: value}} of the last commit and each of its experiments
    (none when it has no experiment)."""
    proc = dvc(root, "exp", "show", "--json", quiet=True)
    if proc.returncode:
        raise DtreproError(f"`dvc exp show` failed in {root}: {' '.join(proc.stderr.split())[:400]}")
    commits = json.loads(proc.stdout or "[]")
    if len(commits) < 2:  # [0] is the workspace, [1] the last commit
        return {}
    base = commits[1]
    found = {f"{base.get('name') or str(base.get('rev'))[:7]} (commit)": _values(base.get("data") or {})}
    for exp in base.get("experiments") or []:
        rev = (exp.get("revs") or [{}])[0]
        found[exp.get("name") or rev.get("name") or str(rev.get("rev"))[:7]] = _values(rev.get("data") or {})
    if len(found) == 1:
        return {}
    return found


def _values(data: dict) -> dict[str, dict]:
    """{"params": {key: value}, "metrics": {key: value}} of one row of `dvc exp show --json`."""
    return {
        kind: {
            k: v for src in (data.get(kind) or {}).values() for k, v in flatten((src or {}).get("data") or {}).items()
        }
        for kind in ("params", "metrics")
    }


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return "-" if value is None else str(value)


def table(found: dict[str, dict[str, dict]], everything: bool = False, width: int = WIDTH) -> str:
    """The experiments side by side within `width` columns, in blocks of as many experiments as fit."""
    if not found:
        return "No experiment of the last commit yet: `dtrepro run smoke` or `dvc exp run -S ...` makes one.\n"
    names = list(found)
    rows, same = [], []
    for kind in ("params", "metrics"):
        for key in sorted({k for e in found.values() for k in e[kind]}):
            cells = [_text(found[n][kind].get(key)) for n in names]
            if everything or len(set(cells)) > 1:
                rows.append((key, cells))
            elif kind == "metrics":
                same.append(f"{key} {cells[0]}")
    key_w = min(max([len(k) for k, _ in rows] + [10]), width // 2)
    col_w = [min(max([len(n)] + [len(c[i]) for _, c in rows]), CELL) for i, n in enumerate(names)]
    lines, start = [], 0
    while start < len(names):
        stop, used = start + 1, key_w + 2 + col_w[start]
        while stop < len(names) and used + 2 + col_w[stop] <= width:
            used, stop = used + 2 + col_w[stop], stop + 1
        for key, cells in [("", names), *rows]:
            line = key[:key_w].ljust(key_w) + "".join(
                f"  {cells[i][: col_w[i]]:>{col_w[i]}}" for i in range(start, stop)
            )
            lines.append(line[:width])
        lines.append("")
        start = stop
    if not rows:
        lines.append("The experiments differ in no param or metric.")
    if same:
        lines += textwrap.wrap("The same in every experiment: " + ", ".join(same), width)
    return "\n".join(lines).rstrip() + "\n"
