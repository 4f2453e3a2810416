"""The cluster's three jobs, each a plain command that any scheduler can run: prep, one task per model, finish.

Every job pulls through `remote.pull`, which checks the remote's run entries before any is used, then runs
`dvc repro` without DVC's own `--pull`.

- `prep`: in a clean worktree, run (or restore from the run-cache) the cheap stages -- study, every
  dataset's source and repair -- and push their outputs; keep their dvc.lock for the tasks.
- `task`: in a clean worktree of its own, pull the model's data, run (or restore) its train and evaluate
  stages only, and push their outputs and run-cache entries. The index comes from `--index`,
  SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX (a Kubernetes Indexed Job), so the same command serves both.
- `finish`: in the submitting workspace, the named run itself with `dvc exp run --pull`: every stage the
  tasks ran is restored from the run-cache, the report and the suite are written, `dvc status` is clean.

Each job writes `<job folder>/status/<job>.json` when it ends: what it ran, what DVC restored, its exit
status; a job with no such file did not end (cancelled, killed, or never started).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from dtrepro.params import flatten
from dtrepro.pipeline import remote
from dtrepro.pipeline.cluster.spec import JobSpec, Worktree, task_index
from dtrepro.pipeline.commands import dvc, stages_ran, stages_restored
from dtrepro.runtime.errors import DtreproError


def _stages(output: str) -> dict[str, list[str]]:
    return {"ran": sorted(stages_ran(output)), "restored": sorted(stages_restored(output))}


def _record(spec: JobSpec, job: str, started: float, code: int, output: str, **extra) -> None:
    folder = spec.folder / "status"
    folder.mkdir(parents=True, exist_ok=True)
    status = {"job": job, "exit": code, "started": started, "ended": time.time(), **_stages(output), **extra}
    (folder / f"{job}.json").write_text(json.dumps(status, indent=2) + "\n")


def _dvc(repo: Path, *args: str) -> str:
    """dvc in `repo`, its output printed (the job's log) and returned; a DtreproError if it fails."""
    proc = dvc(repo, *args, quiet=True)
    print(proc.stdout + proc.stderr, flush=True)
    if proc.returncode:
        raise DtreproError(f"dvc {' '.join(args)} failed in {repo} (exit {proc.returncode}); see the log above.")
    return proc.stdout


@contextmanager
def recorded(spec: JobSpec, job: str, started: float, output: list, **extra):
    """Write the job's status file however it ends: any failure, not only the project's own errors, is recorded
    and said in one paragraph (the job's log), so that `cluster status` tells how it ended."""
    try:
        yield
    except DtreproError:
        _record(spec, job, started, 1, "".join(output), **extra)
        raise
    except Exception as err:
        _record(spec, job, started, 1, "".join(output), error=f"{type(err).__name__}: {err}", **extra)
        raise DtreproError(
            f"The {job} job of {spec.name} failed: {type(err).__name__}: {' '.join(str(err).split())}. Its status is "
            f"recorded in {spec.folder / 'status'}; `dtrepro cluster submit {spec.name}` again runs what is missing."
        ) from None
    _record(spec, job, started, 0, "".join(output), **extra)


def prep(folder: Path) -> None:
    spec, started, output = JobSpec.load(folder), time.time(), []
    targets = [f"repair@{d}" for d in spec.datasets]  # with their upstream stages: study, source@<dataset>
    with recorded(spec, "prep", started, output), Worktree(spec, "prep") as repo:
        remote.pull(repo, spec.remote, ["study", *(f"source@{d}" for d in spec.datasets), *targets], new_ok=True)
        output.append(_dvc(repo, "repro", *targets))
        print(f"prep: pushed {remote.push(repo, spec.remote)}", flush=True)
        (spec.folder / "dvc.lock").write_bytes((repo / "dvc.lock").read_bytes())


class Phases(dict):
    """Seconds spent in each phase of a job, for its status file (bench/cluster.py reads the overhead off it)."""

    @contextmanager
    def __call__(self, name: str):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self[name] = round(time.monotonic() - t0, 3)


def task(folder: Path, index: int | None = None) -> None:
    spec, started, output, phases = JobSpec.load(folder), time.time(), [], Phases()
    i = task_index(index, len(spec.models))
    model, job = spec.models[i], f"task-{i}"
    with recorded(spec, job, started, output, model=model.train, phases=phases):
        with phases("job"), Worktree(spec, job) as repo:
            with phases("pull"):  # the clean data the model trains on; the checked run entries of its stages
                remote.pull(repo, spec.remote, [f"repair@{model.dataset}", *model.stages], new_ok=True)
            with phases("stages"):
                output.append(_dvc(repo, "repro", "--single-item", *model.stages))
            with phases("push"):
                print(f"{job}: pushed {remote.push(repo, spec.remote, model.stages)}", flush=True)


def finish(folder: Path) -> None:
    """The named run as submitted: refused where the workspace's params now make other values (an edit to
    params.yaml or a profile after submitting), which would run stages of values no task ran."""
    from dtrepro.pipeline.named_runs import resolve, run

    spec, started, output = JobSpec.load(folder), time.time(), []
    root = Path(spec.root)
    with recorded(spec, "finish", started, output):
        now, ran = flatten(resolve(root, spec.name, spec.assignments)), flatten(spec.params)
        changed = sorted(k for k in now.keys() | ran.keys() if now.get(k) != ran.get(k))
        if changed:
            key = changed[0]
            raise DtreproError(
                f"The workspace {root} now makes other values for the named run {spec.name} than were submitted: "
                f"{key} is {now.get(key)!r}, the tasks ran {ran.get(key)!r} ({len(changed)} "
                f"value(s) differ). The report was not written, so no stage of other values ran here. Put the "
                f"submitted values back (git stash) and run `dtrepro cluster finish {folder}`, or submit again."
            )
        code = run(root, spec.name, spec.assignments, [], dvc_args=["--pull"], capture=output)
        if code:
            raise DtreproError(f"The named run {spec.name} failed in {root} (exit {code}); see the log above.")
