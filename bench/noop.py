"""Benchmark: `dvc repro` and `dvc exp run` when nothing changed, after a named smoke run.

Target: a no-op `dvc repro` returns in <= 5 s on the 2-core machine. Printed against the
reference of the same run: `dvc --version`, DVC's own start-up, which every command pays.
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support.repos import copy_repo, run

TARGET_S = 5.0


def timed(repo: Path, *cmd: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = run(list(cmd), repo)
        times.append(time.perf_counter() - start)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
        if cmd[:2] == ("dvc", "repro") and "Running stage" in proc.stdout:
            raise SystemExit(f"dvc repro ran a stage after the named run:\n{proc.stdout}")
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repo(Path(tmp))
        subprocess.run(
            [sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke"], cwd=repo, check=True, capture_output=True
        )
        startup = timed(repo, "dvc", "--version")
        repro = timed(repo, "dvc", "repro")
        status = timed(repo, "dvc", "status")
        exp = timed(repo, "dvc", "exp", "run")
    verdict = "OK" if repro <= TARGET_S else "OVER"
    print(
        f"nothing changed after the named smoke run (medians of 3): dvc repro {repro:.2f} s ({verdict} against "
        f"{TARGET_S:g} s), dvc status {status:.2f} s, dvc exp run {exp:.2f} s; DVC's start-up alone "
        f"(dvc --version) {startup:.2f} s, so dvc repro is {repro / startup:.1f}x its start-up"
    )


if __name__ == "__main__":
    main()
