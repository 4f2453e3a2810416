"""Results shared through a DVC remote: data, models and the run-cache, so that another clone trains nothing.

DVC's run-cache maps a stage's command, deps and params to the outputs it wrote; `dvc exp run` restores a
stage from it instead of running it. Across machines, DVC 3.67's `dvc push --run-cache` sends the run
entries and the workspace's cached outputs, but not the objects of `cache: false` metrics and plots that
the entries name (its maintainers: it pushes "nothing except the runs files"), nor the outputs of any
params other than the workspace's; a clone that pulls the entries then finds their objects missing and
runs the stages again. So, through DVC's own API:

- `push` sends what `dvc push --run-cache` sends, then every object that any local run entry names;
- `pull` fetches the workspace's outputs (`dvc pull`), the run entries, and every object they name.

After `pull`, a plain `dvc exp run` (or a named run) restores every stage that ran before, here or on any
machine that pushed to the remote, for every set of params that ran; only what never ran anywhere runs.
Any DVC remote works: a shared folder, SSH or S3 (`pip install dvc-ssh` or `dvc-s3`, not in the lock).
"""

from __future__ import annotations

from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

from dtrepro.errors import DtreproError


@dataclass
class Transfer:
    outputs: int  # files of the workspace's outputs sent or fetched
    runs: int  # run-cache entries
    objects: int  # objects the run entries name, besides
    missing: int  # objects a run entry names that are in neither cache

    def __str__(self) -> str:
        text = f"{self.outputs} output files, {self.runs} run-cache entries, {self.objects} objects they name"
        return text + (f" ({self.missing} named but found nowhere)" if self.missing else "")


def _repo(root: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise DtreproError(f"{root} is not a DVC repository: run this from the project's root.") from None


def _remote_name(repo, remote: str | None) -> str:
    from dvc.config import NoRemoteError

    try:
        return repo.cloud.get_remote(remote).name
    except NoRemoteError:
        raise DtreproError(
            "No DVC remote is set. Add one for the team, e.g. a shared folder: `dvc remote add -d team "
            "/shared/dtrepro-cache` (or ssh://host/path, s3://bucket/path with dvc-ssh or dvc-s3 installed), "
            "commit .dvc/config, then push again."
        ) from None


def default_remote(root: Path) -> tuple[str, str]:
    """The default DVC remote's name and URL, a local path made absolute (what every node of a cluster reads)."""
    with _repo(root) as repo:
        name = _remote_name(repo, None)
        url = repo.config["remote"][name]["url"]
    if "://" not in url and not Path(url).is_absolute():
        url = str((root / ".dvc" / url).resolve())  # DVC reads a relative path from the config's folder
    return name, url


def run_entries(repo) -> list[tuple[str, str]]:
    """Every (key, value) of the local run-cache."""
    runs = Path(repo.stage_cache.cache_dir)
    if not runs.is_dir():
        return []
    return [(key.name, value.name) for prefix in runs.iterdir() for key in prefix.iterdir() for value in key.iterdir()]


def _named_objects(repo) -> set:
    """The objects the local run entries name, cached outputs and `cache: false` metrics and plots alike (DVC's
    run-cache keeps both; a stage rebuilt from an entry treats every output as cached)."""
    used = repo.stage_cache.get_used_objs(run_entries(repo))
    return set().union(*used.values()) if used else set()


def push(root: Path, remote: str | None = None, targets: list[str] | None = None) -> Transfer:
    """Send the workspace's outputs (of `targets`' stages, or all), the run-cache and every object its entries name
    to the remote."""
    from dvc.exceptions import UploadError

    # DVC resolves targets, and builds each run entry's stage from "dvc.yaml", relative to the cwd
    with chdir(root), _repo(root) as repo:
        name = _remote_name(repo, remote)
        before = len(run_entries(repo))
        try:
            outputs = repo.push(targets=targets, remote=name, run_cache=True)
        except UploadError as err:
            raise DtreproError(f"Pushing to the DVC remote '{name}' failed: {err}. Check it, push again.") from None
        with repo.lock:
            result = repo.cloud.push(_named_objects(repo), remote=name)
    return Transfer(max(0, outputs - before), before, len(result.transferred), len(result.failed))


def pull(root: Path, remote: str | None = None) -> Transfer:
    """Fetch the workspace's outputs, the run-cache entries and every object they name from the remote."""
    with chdir(root), _repo(root) as repo:
        name = _remote_name(repo, remote)
        # outputs of the workspace's dvc.lock that no one pushed are left missing: dvc exp run makes them
        pulled = repo.pull(remote=name, run_cache=True, allow_missing=True)
        with repo.lock:
            result = repo.cloud.pull(_named_objects(repo), remote=name)
        runs = len(run_entries(repo))
    return Transfer(pulled["stats"]["fetched"], runs, len(result.transferred), len(result.failed))
