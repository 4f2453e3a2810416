"""Benchmark: the render stage's share of a named run's wall time (default: `make demo`'s).

Runs `dtrepro run NAME` in a scratch copy of this checkout (timed: its whole wall time, the render stage
included), then the render stage again alone (`dvc repro --force --single-item render@<dataset>`, timed), and
prints the ratio. Target: at most 10% of the demo. `--keep DIR` leaves the copy (its results/ and
results/index.html) in DIR.

    python bench/render.py [--name demo] [--keep DIR]
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from support.repos import copy_repo, run

TARGET = 0.10


def timed(repo: Path, cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = run(cmd, repo, timeout=4 * 3600)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="demo", help="the named run (default demo)")
    parser.add_argument("--keep", type=Path, help="copy the finished repository here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repo(Path(tmp))
        whole = timed(repo, [sys.executable, "-m", "dtrepro.pipeline.cli", "run", args.name])
        datasets = yaml.safe_load((repo / "params.yaml").read_text())["study"]["datasets"]
        render = sum(timed(repo, ["dvc", "repro", "--force", "--single-item", f"render@{d}"]) for d in datasets)
        share = render / whole
        print(
            f"{args.name}: {whole / 60:.1f} min in all; the render stage alone {render:.1f} s, "
            f"{100 * share:.1f}% of it ({'OK' if share <= TARGET else 'OVER'} against {100 * TARGET:.0f}%)"
        )
        if args.keep:
            shutil.copytree(repo, args.keep, symlinks=True, dirs_exist_ok=True)


if __name__ == "__main__":
    main()
