"""What a study spread over a cluster is: the job's spec, its folder, and the clean worktree each task runs in.

`dtrepro cluster submit NAME` writes the spec of named run NAME into the job's folder (on the shared
filesystem, inside the submitting workspace): the commit and the params every task uses, the DVC remote
they share, and the models of the study, one per array task. Each task clones the repository at that
commit into a folder of its own, writes those params and the remote into it, and works there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from dtrepro.params import PARAMS_FILE, StudyParams
from dtrepro.pipeline.commands import dvc
from dtrepro.runtime.errors import DtreproError

JOBS_DIR = Path(".dvc") / "tmp" / "cluster"  # in the submitting workspace: git-ignored, on its filesystem
INDEX_VARS = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")  # Slurm's array index; a Kubernetes Indexed Job's


@dataclass
class Resources:
    """What each job asks Slurm for (`sbatch` options; None: the cluster's default)."""

    partition: str | None = None
    time: str | None = None  # e.g. 02:00:00
    gres: str | None = None  # e.g. gpu:1, for the training tasks only
    cpus_per_task: int = 1
    mem: str | None = None  # e.g. 16G
    max_parallel: int | None = None  # array tasks running at once (sbatch --array=...%N)

    def sbatch(self, gpu: bool) -> list[str]:
        options = {"partition": self.partition, "time": self.time, "mem": self.mem, "gres": self.gres if gpu else None}
        return [f"--{k}={v}" for k, v in options.items() if v] + [f"--cpus-per-task={self.cpus_per_task}"]


@dataclass
class Model:
    """One array task: a model's train stage and its evaluation."""

    train: str  # train@<dataset>-<K>-<seed>, DVC's name of the matrix item
    evaluate: str
    dataset: str

    @property
    def stages(self) -> list[str]:
        return [self.train, self.evaluate]


@dataclass
class JobSpec:
    name: str  # the named run
    root: str  # the submitting workspace, where the report lands
    repo: str  # what the tasks clone: the workspace's path (a shared filesystem) or a git URL
    commit: str
    params: dict  # params.yaml as the named run makes it
    assignments: list[str]  # the named run's -S values, for the final `dtrepro run`
    remote: str  # the DVC remote's name
    remote_url: str
    python: str  # the interpreter every job runs (a venv every node can read)
    resources: Resources = field(default_factory=Resources)
    models: list[Model] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return job_folder(Path(self.root), self.name)

    @property
    def datasets(self) -> list[str]:
        return list(StudyParams.from_params(self.params).datasets)

    def save(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "spec.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "JobSpec":
        path = Path(folder) / "spec.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DtreproError(f"{path} cannot be read as a job's spec ({err}); submit the job again.") from None
        data["resources"] = Resources(**data["resources"])
        data["models"] = [Model(**m) for m in data["models"]]
        return cls(**data)


def job_folder(root: Path, name: str) -> Path:
    """The folder of named run `name`'s submission; one paragraph for a name that would lead out of JOBS_DIR."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise DtreproError(
            f"{name!r} is not a named run's name (letters, digits, '_', '-', '.'): a submission's folder is "
            f"{JOBS_DIR}/<name>. `dtrepro list` shows the names."
        )
    return root / JOBS_DIR / name


def models_of(params: dict) -> list[Model]:
    """One model per (dataset, context length, seed) of the study, by DVC's names of its matrix items."""
    study = StudyParams.from_params(params)
    return [
        Model(f"train@{d}-{r.context_len}-{r.seed}", f"evaluate@{d}-{r.context_len}-{r.seed}", d)
        for d in study.datasets
        for r in study.runs
    ]


def task_index(given: int | None, models: int) -> int:
    """The array task's model index: --index, else the scheduler's variable; one paragraph unless it names one of
    the `models` models."""
    where, value = "--index", given
    if value is None:
        where, value = next(((var, os.environ[var]) for var in INDEX_VARS if os.environ.get(var)), (None, None))
    if where is None:
        raise DtreproError(f"No task index: pass --index N, or run as an array task ({' or '.join(INDEX_VARS)} set).")
    try:
        index = int(value)
    except ValueError:
        index = -1
    if not 0 <= index < models:
        raise DtreproError(
            f"{where} is {value!r}, which names no model of this submission: its models are 0 to {models - 1}. The "
            f"spec may have been rewritten by a later submission; submit again to run the array of the current one."
        )
    return index


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise DtreproError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.strip()


class Worktree:
    """A clean clone of the spec's commit with its params and remote, in a temporary folder (removed after)."""

    def __init__(self, spec: JobSpec, label: str):
        self.spec, self.label = spec, label

    def __enter__(self) -> Path:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"dtrepro-{self.spec.name}-{self.label}-"))
        path = self.tmp / "repo"
        git(self.tmp, "clone", "--quiet", "--no-hardlinks", "--no-checkout", self.spec.repo, str(path))
        git(path, "checkout", "--quiet", "--detach", self.spec.commit)
        (path / PARAMS_FILE).write_text(yaml.safe_dump(self.spec.params, sort_keys=False))
        prep_lock = self.spec.folder / "dvc.lock"
        if prep_lock.exists():  # the cheap stages' entries, as the prep job recorded them
            shutil.copy(prep_lock, path / "dvc.lock")
        done = dvc(path, "remote", "add", "--local", "-f", "-d", self.spec.remote, self.spec.remote_url, quiet=True)
        if done.returncode:
            raise DtreproError(f"Could not set the DVC remote {self.spec.remote_url} in {path}.")
        return path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
