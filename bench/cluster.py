"""The smoke study on a Slurm cluster of one node on localhost against the same study in one local `dtrepro run`.

Prints the wall time of each, where a task's time goes (clean worktree, pulling the data, its stages, pushing),
the overhead per task, and what the wall time would be on N nodes for a study whose models train for minutes
on a GPU: wall(N) ~ prep + ceil(models / N) * (train + overhead) + finish.
Needs Debian's slurm-wlm and munge (the daemons run as this user, see support.local_slurm).
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from support.local_slurm import LocalSlurm, installed
from support.repos import copy_repo, run

JOBS = Path(".dvc/tmp/cluster/smoke")


def timed(cmd: list[str], repo: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = run(cmd, repo, env=env or {}, timeout=3600)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    if not installed():
        sys.exit("bench/cluster.py needs Debian's slurm-wlm and munge: apt-get install slurm-wlm munge")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        local = copy_repo(tmp / "local")
        local_s = timed([sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke"], local)
        repo = copy_repo(tmp / "cluster")
        timed(["dvc", "remote", "add", "-d", "team", str(tmp / "remote")], repo)
        timed(["git", "commit", "-qam", "remote"], repo)
        with LocalSlurm(tmp / "slurm") as env:
            cluster_s = timed(
                [sys.executable, "-m", "dtrepro.pipeline.cli", "cluster", "submit", "smoke", "--wait"],
                repo,
                env={"SLURM_CONF": env["SLURM_CONF"]},
            )
        status = {p.stem: json.loads(p.read_text()) for p in (repo / JOBS / "status").glob("*.json")}
    tasks = [s for name, s in sorted(status.items()) if name.startswith("task-")]
    phases = {k: statistics.median(t["phases"][k] for t in tasks) for k in ("job", "pull", "stages", "push")}
    overhead = phases["job"] - phases["stages"]
    prep = status["prep"]["ended"] - status["prep"]["started"]
    finish = status["finish"]["ended"] - status["finish"]["started"]
    print(
        f"smoke study, {len(tasks)} models: one local `dtrepro run smoke` {local_s:.1f} s; on Slurm {cluster_s:.1f} s "
        f"({cluster_s / local_s:.2f}x), 2 tasks at a time on this 2-core node"
    )
    print(
        f"prep job {prep:.1f} s, finish job {finish:.1f} s; per task (median): {phases['job']:.1f} s in all, "
        f"stages {phases['stages']:.1f} s, pull {phases['pull']:.1f} s, push {phases['push']:.1f} s, "
        f"overhead (clone, pull, push) {overhead:.1f} s"
    )
    print("\nwall time on N nodes, one GPU each, for the suite's 27 models at T minutes of training per model:")
    print("| N | T = 10 min | T = 30 min | overhead per task at T = 10 min |")
    print("|---|---|---|---|")
    for n in (1, 2, 4, 9, 27):
        rounds = math.ceil(27 / n)
        walls = [(prep + rounds * (t * 60 + overhead) + finish) / 60 for t in (10, 30)]
        print(f"| {n} | {walls[0]:.0f} min | {walls[1]:.0f} min | {overhead / (600 + overhead):.1%} |")


if __name__ == "__main__":
    main()
