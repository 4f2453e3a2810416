"""A study on a Slurm cluster: one command submits the prep job, an array of one task per model, and the report.

    dtrepro cluster submit suite --partition gpu --gres gpu:1 --time 02:00:00 --cpus-per-task 8 --wait

From a login node whose workspace lies on the cluster's shared filesystem, with a DVC remote every node
reaches (`dvc remote add -d team /shared/dtrepro-cache`): a prep job runs the cheap stages; an array of
one task per `train@D-K-S` (and its `evaluate@`) runs after it (`--dependency=afterok`), each in a clean
worktree of the submitted commit and params; a last job, after the whole array, runs the named run in
the workspace, restoring every stage from the run-cache, and writes the report and the suite there.
`--kill-on-invalid-dep=yes` cancels the jobs after a failed one instead of leaving them pending forever.
Submitting again runs only what is missing: whatever a task pushed is restored, not run. Plain
`sbatch --wrap` scripts, not submitit: the jobs are shell commands of this package (any scheduler, a
Kubernetes Indexed Job included, runs the same `dtrepro cluster task`), and submitit polls Slurm's
accounting database, which many clusters, and this project's test cluster, do not run.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dtrepro.pipeline.cluster.spec import JobSpec, Resources, git, models_of
from dtrepro.pipeline.remote import default_remote
from dtrepro.runtime.errors import DtreproError

CODE = ("src", "stages", "dvc.yaml", "profiles", "pyproject.toml")  # what the tasks run: committed, unchanged


def _sbatch(args: list[str], submitted: list[str]) -> str:
    """Submit one job; if sbatch refuses it, cancel the jobs `submitted` before it (they would wait for it)."""
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
    if proc.returncode:
        if submitted:
            subprocess.run(["scancel", *submitted], capture_output=True)
        cancelled = f" The jobs submitted before it ({', '.join(submitted)}) were cancelled." if submitted else ""
        raise DtreproError(
            f"sbatch refused the job ({' '.join(proc.stderr.split())}); check the resource options.{cancelled}"
        )
    job = proc.stdout.strip().split(";")[0]
    submitted.append(job)
    return job


def pattern_path(path: Path) -> str:
    """A path for sbatch's --output, whose % starts a pattern (%a: the array index): a literal % doubled."""
    return str(path).replace("%", "%%")


def make_spec(root: Path, name: str, assignments: list[str], resources: Resources) -> JobSpec:
    from dtrepro.pipeline.named_runs import resolve, validate

    wanted = resolve(root, name, assignments)
    validate(wanted)
    if git(root, "status", "--porcelain", "--untracked-files=no", "--", *CODE):
        raise DtreproError(
            f"{root} has uncommitted changes to {', '.join(CODE)}: every task runs a clean worktree of the "
            f"commit, so it would not run them. Commit them (or stash them), then submit again."
        )
    remote, url = default_remote(root)
    return JobSpec(
        name,
        str(root),
        str(root),
        git(root, "rev-parse", "HEAD"),
        wanted,
        list(assignments),
        remote,
        url,
        sys.executable,
        resources,
        models_of(wanted),
    )


def plan(root: Path, name: str, assignments: list[str], resources: Resources) -> JobSpec:
    """Write the job's spec into its folder, clearing an earlier submission's status files: what any scheduler runs.
    Refused while jobs of an earlier submission of the same name are queued: their tasks read that spec."""
    spec = make_spec(root, name, assignments, resources)
    earlier = spec.folder / "jobs.json"
    if earlier.exists() and shutil.which("squeue"):
        ids = list(json.loads(earlier.read_text()).values())
        still = queued(ids)
        if still:
            raise DtreproError(
                f"Jobs of the earlier submission of {name} are still queued or running ({', '.join(sorted(still))}): "
                f"their tasks read {spec.folder}, which a new submission would rewrite. Wait for them "
                f"(`dtrepro cluster status {name}`) or cancel them (`scancel {' '.join(ids)}`), then submit again."
            )
    shutil.rmtree(spec.folder / "status", ignore_errors=True)
    spec.save()
    return spec


def submit(root: Path, name: str, assignments: list[str], resources: Resources) -> dict[str, str]:
    """Write the job's spec and submit its three jobs; their Slurm job ids."""
    if shutil.which("sbatch") is None:
        raise DtreproError("sbatch is not on PATH: submit from a node of a Slurm cluster (a login node).")
    spec = plan(root, name, assignments, resources)
    folder, res = spec.folder, spec.resources

    def command(job: str) -> str:
        return " ".join(
            shlex.quote(x) for x in (spec.python, "-m", "dtrepro.pipeline.cli", "cluster", job, str(folder))
        )

    common, logs, done = ["--kill-on-invalid-dep=yes", f"--chdir={root}"], pattern_path(folder), []
    prep = _sbatch(
        [f"--job-name=dtrepro-{name}-prep", f"--output={logs}/prep.log", *common, *res.sbatch(False)]
        + ["--wrap", command("prep")],
        done,
    )
    limit = f"%{res.max_parallel}" if res.max_parallel else ""
    array = _sbatch(
        [f"--job-name=dtrepro-{name}-task", f"--array=0-{len(spec.models) - 1}{limit}", f"--dependency=afterok:{prep}"]
        + [f"--output={logs}/task-%a.log", *common, *res.sbatch(True), "--wrap", command("task")],
        done,
    )
    final = _sbatch(
        [f"--job-name=dtrepro-{name}-finish", f"--dependency=afterok:{array}", f"--output={logs}/finish.log"]
        + [*common, *res.sbatch(False), "--wrap", command("finish")],
        done,
    )
    ids = {"prep": prep, "array": array, "finish": final}
    (folder / "jobs.json").write_text(json.dumps(ids) + "\n")
    return ids


def queued(ids: list[str]) -> list[str] | None:
    """The jobs (and array tasks) of `ids` that Slurm still holds, pending or running; None when squeue fails
    (the controller busy or restarting), which says nothing about the jobs. A job Slurm has forgotten is ended."""
    cmd = ["squeue", "--noheader", "--format=%i", "--jobs", ",".join(ids)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode and "Invalid job id" in proc.stderr:
        return []
    return proc.stdout.split() if proc.returncode == 0 else None


SQUEUE_PATIENCE_S = 600  # how long squeue may keep failing before waiting gives up


def wait(ids: dict[str, str], poll_s: float = 1.0, patience_s: float = SQUEUE_PATIENCE_S) -> None:
    """Until no job of the submission is pending or running (squeue: Slurm's accounting may not run). A failing
    squeue is asked again; after `patience_s` of failures in a row, one paragraph (the jobs may well still run)."""
    failing_since = None
    while True:
        left = queued(list(ids.values()))
        if left == []:
            return
        if left is None:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > patience_s:
                raise DtreproError(
                    f"squeue has failed for {patience_s:.0f} s, so whether the jobs ({', '.join(ids.values())}) "
                    f"still run is unknown; they were not touched. Check the cluster (`squeue`), then "
                    f"`dtrepro cluster status` once they have ended."
                )
        else:
            failing_since = None
        time.sleep(poll_s)


def report(folder: Path) -> tuple[bool, str]:
    """Whether every job of the submission ended well, and one line per job that did not, by its model's name."""
    spec = JobSpec.load(folder)

    def status(job: str) -> dict | None:
        path = folder / "status" / f"{job}.json"
        return json.loads(path.read_text()) if path.exists() else None

    lines = []
    for job, what in (
        [("prep", "the prep job (study, source, repair)")]
        + [(f"task-{i}", f"{m.train} and {m.evaluate}") for i, m in enumerate(spec.models)]
        + [("finish", f"the named run {spec.name} (report, suite)")]
    ):
        found = status(job)
        if found is None:
            lines.append(f"{job}: {what} did not end: cancelled, killed, or never started (log: {folder / job}.log)")
        elif found["exit"]:
            lines.append(f"{job}: {what} failed with exit {found['exit']} (log: {folder / job}.log)")
    ok = not lines
    return ok, "\n".join(lines) or f"every job of {spec.name} ended well; the report is in {spec.root}/results/"
