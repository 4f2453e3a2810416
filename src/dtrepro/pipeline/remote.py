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

Whoever can write the remote writes the run entries and the folder listings (`.dir` objects) that a restore
checks out, so everything pulled is untrusted until checked (`check_entry`): the remote's entries are copied
into a temporary folder, each is checked with every listing it names, and only then do they join the local
run-cache. A bad one stops the pull with one paragraph naming it, left where it is; nothing is written here.
A local entry that fails the same check (a truncated write, a plain `dvc pull --run-cache`) is moved aside to
`.dvc/tmp/refused/` before any run or push. The trust model: a remote is as trusted as the git repository; an
entry that passes these checks can still claim results no run made, which `dtrepro verify` finds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import chdir, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

from dtrepro.params import read_yaml
from dtrepro.runtime.errors import DtreproError, is_disk_full


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


def _url(root: Path, repo, name: str) -> str:
    """Remote `name`'s URL, a local path made absolute (DVC reads a relative one from the config's folder)."""
    url = repo.config["remote"][name]["url"]
    if "://" not in url and not Path(url).is_absolute():
        url = str((root / ".dvc" / url).resolve())
    return url


def default_remote(root: Path) -> tuple[str, str]:
    """The default DVC remote's name and URL, a local path made absolute (what every node of a cluster reads)."""
    with _repo(root) as repo:
        name = _remote_name(repo, None)
        return name, _url(root, repo, name)


def _check_folder(root: Path, repo, name: str, pulling: bool) -> Path | None:
    """A local remote's folder (None for another kind), refused where it cannot be one: a file, or when `pulling`
    explicitly, nothing at all (a typo or a shared filesystem not mounted)."""
    url = _url(root, repo, name)
    if "://" in url and not url.startswith("file://"):
        return None
    folder = Path(url.removeprefix("file://"))
    if folder.exists() and not folder.is_dir():
        raise DtreproError(
            f"The DVC remote '{name}' is {folder}, which is a file, not a folder: nothing was sent or fetched. Point "
            f"the remote at a folder (`dvc remote modify {name} url /shared/dtrepro-cache`), then run again."
        )
    if pulling and not folder.is_dir():
        raise DtreproError(
            f"The DVC remote '{name}' is {folder}, which does not exist, so there is nothing to pull: nothing was "
            f"fetched. Check its path (`dvc remote list`) and that the shared filesystem is mounted here; a new remote "
            f"fills with the first `dtrepro push`."
        )
    return folder


def _drop_damaged(folder: Path | None, since: float) -> int:
    """Remove the objects under `folder` written since `since` whose bytes are not what their names say (a
    transfer cut short by a full disk), and DVC's temporary files (a push into the same remote at that moment
    loses its file in flight, fails and is pushed again). Returns how many."""
    if folder is None or not (folder / "files" / "md5").is_dir():
        return 0
    dropped = 0
    for path in (folder / "files" / "md5").glob("*/*"):
        try:
            if path.stat().st_mtime < since:
                continue
            oid = path.parent.name + path.name
            if len(oid) in (32, 36) and hashlib.md5(path.read_bytes()).hexdigest() == oid.removesuffix(".dir"):
                continue
            path.unlink()
            dropped += 1
        except OSError:
            continue
    return dropped


class _DvcErrors(logging.Filter):
    """While in effect, DVC's error lines (one per object a transfer failed on) are counted, the first kept, and
    none printed: the transfer's one paragraph says what they say."""

    def __init__(self):
        super().__init__()
        self.first, self.count = "", 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.count += 1
        if not self.first:
            cause = record.exc_info[1] if record.exc_info else None
            self.first = " ".join(f"{record.getMessage()}{f' - {cause}' if cause else ''}".split())
        return False

    def __enter__(self):
        for handler in logging.getLogger("dvc").handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc):
        for handler in logging.getLogger("dvc").handlers:
            handler.removeFilter(self)


@contextmanager
def _transfer(name: str, verb: str, folders: list):
    """A push or pull to remote `name`: an OSError or a failed object becomes one paragraph, and what the transfer
    left half-written in the local cache and a local remote (`folders`) is removed first."""
    from dvc.exceptions import DvcException

    since, errors = time.time() - 1, _DvcErrors()
    try:
        with errors:
            yield
    except (OSError, DvcException) as err:
        dropped = sum(_drop_damaged(f, since) for f in folders)
        cause = err if isinstance(err, OSError) else (err.__cause__ or err)
        if isinstance(cause, OSError) and is_disk_full(cause) or "No space left on device" in errors.first:
            what = "a disk is full"
        elif isinstance(cause, OSError) and cause.filename:
            what = f"{cause.strerror} ({cause.filename})"
        else:
            what = " ".join(str(cause).split())
        if errors.first:
            what += f"; the first error, of {errors.count}: {errors.first}"
        raise DtreproError(
            f"{verb.capitalize()} {'to' if verb == 'push' else 'from'} the DVC remote '{name}' failed: {what}. "
            f"{dropped} half-written object(s) were removed, so both caches hold only whole objects. Free space or "
            f"fix the remote's permissions (`dvc remote list` shows where it is), then {verb} again: what was "
            f"already sent or fetched is kept."
        ) from None


def safe_relpath(path) -> bool:
    """Whether `path` is a plain relative path that stays inside the folder it is read from."""
    return (
        isinstance(path, str)
        and path not in ("", ".")
        and "\\" not in path
        and ":" not in PurePosixPath(path).parts[0]
        and not PurePosixPath(path).is_absolute()
        and ".." not in PurePosixPath(path).parts
        and posixpath.normpath(path) == path
    )


def check_entry(key: str, value: str, text: str, declared: dict[str, set], listing: Callable) -> str | None:
    """What is wrong with the run entry `value` under `key` holding `text`, or None: it must be DVC's entry format,
    its file names the hashes of its content, its outputs the declared outputs of the stage whose command it
    names, every path inside the workspace, and every folder listing (`listing(oid)`: its bytes, or None where
    neither cache has it) what its name says, naming only files inside its folder."""
    from dvc.schema import COMPILED_LOCK_FILE_STAGE_SCHEMA
    from dvc.stage.cache import _get_cache_hash
    from dvc.utils.serialize import YAMLFileCorruptedError, parse_yaml
    from voluptuous import Invalid

    try:
        entry = COMPILED_LOCK_FILE_STAGE_SCHEMA(parse_yaml(text, value))
    except (YAMLFileCorruptedError, Invalid, TypeError):
        return "is not a run entry in DVC's format (truncated, or not DVC's YAML)"
    if _get_cache_hash(copy.deepcopy(entry)) != value:
        return "is not what its file name says: its name is not the hash of its content (it was edited or damaged)"
    if _get_cache_hash(copy.deepcopy(entry), key=True) != key:
        return "lies under a key that is not the hash of its command, deps, params and output paths"
    paths = [out["path"] for out in entry["outs"]]
    outside = [p for p in paths + [dep["path"] for dep in entry.get("deps", [])] if not safe_relpath(p)]
    if outside:
        return f"names the path {outside[0]!r}, which is not a plain path inside the workspace"
    wanted = declared.get(entry["cmd"])
    if wanted is not None and set(paths) != wanted:
        return f"has the outputs {sorted(paths)}, not those its stage declares in dvc.yaml ({sorted(wanted)})"
    for out in entry["outs"]:
        oid = out.get("md5") or ""
        if not oid.endswith(".dir") or (data := listing(oid)) is None:
            continue
        if hashlib.md5(data).hexdigest() != oid.removesuffix(".dir"):
            return f"names the folder listing {oid} of {out['path']}, whose content is not what its name says"
        try:
            names = [item["relpath"] for item in json.loads(data)]
        except (ValueError, TypeError, KeyError):
            return f"names the folder listing {oid} of {out['path']}, which is not a listing"
        bad = next((name for name in names if not safe_relpath(name)), None)
        if bad is not None:
            return f"names the folder listing {oid} of {out['path']}, which writes {bad!r}, outside that folder"
    return None


def _declared(repo) -> dict[str, set]:
    """command -> the output paths its stage of dvc.yaml declares."""
    return {stage.cmd: {out.def_path for out in stage.outs} for stage in repo.index.stages if stage.cmd}


def _entries(runs: Path) -> list[tuple[str, str, Path]]:
    """(key, value, file) of every run entry under a run-cache folder."""
    return [(f.parent.name, f.name, f) for f in sorted(runs.glob("*/*/*")) if f.is_file()]


def _reader(*odbs) -> Callable:
    """A folder listing's bytes from the first of `odbs` that has it, or None."""

    def read(oid: str) -> bytes | None:
        for odb in odbs:
            path = odb.oid_to_path(oid)
            if odb.fs.exists(path):
                return odb.fs.cat_file(path)
        return None

    return read


REFUSED = Path(".dvc/tmp/refused")  # where a bad local run entry is moved, for its owner to inspect


def check_local_runs(root: Path, repo=None) -> int:
    """Check every entry of the local run-cache (`check_entry`); move a bad one to REFUSED and stop with one
    paragraph naming it. Returns how many entries there are."""
    if repo is None:
        with chdir(root), _repo(root) as repo:
            return check_local_runs(root, repo)
    entries = _entries(Path(repo.stage_cache.cache_dir))
    declared = _declared(repo) if entries else {}
    read = _reader(repo.cache.local)
    for key, value, path in entries:
        problem = check_entry(key, value, path.read_text(errors="replace"), declared, read)
        if problem:
            aside = root / REFUSED / key / value
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, aside)
            raise DtreproError(
                f"The local run-cache entry {path} {problem}. DVC would restore a stage from it, so it was moved to "
                f"{aside} for you to inspect (delete it when done); the cache is otherwise unchanged. If it came "
                f"from a remote (a plain `dvc pull --run-cache`), the remote holds it too: pull with `dtrepro pull`, "
                f"which checks what it fetches. Then run again."
            )
    return len(entries)


def fetch_runs(root: Path, repo, name: str) -> int:
    """Copy the remote's run entries into a temporary folder, check each with the folder listings it names, and
    only when all pass add them to the local run-cache. Returns how many the remote holds."""
    from dvc.fs import LocalFileSystem

    source = repo.cloud.get_remote_odb(name, "fetch --run-cache", hash_name="md5-dos2unix")
    read = _reader(repo.cache.local, repo.cloud.get_remote_odb(name, "fetch --run-cache"))
    declared = _declared(repo)
    tmp_parent = root / ".dvc" / "tmp"
    tmp_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_parent, prefix="fetched-runs-") as staging:
        staged = SimpleNamespace(fs=LocalFileSystem(), path=staging)
        repo.stage_cache.transfer(source, staged)
        entries = _entries(Path(staging) / "runs")
        for key, value, path in entries:
            problem = check_entry(key, value, path.read_text(errors="replace"), declared, read)
            if problem:
                where = source.fs.join(source.path, "runs", key[:2], key, value)
                raise DtreproError(
                    f"The DVC remote '{name}' holds a run entry that dtrepro will not restore: {where} {problem}. "
                    f"Anyone who can write the remote can put such an entry there, by accident (an interrupted "
                    f"upload) or on purpose; checking it out could write files outside its output folder or claim "
                    f"results that no run made. Nothing was pulled or written here, and the entry is left on the "
                    f"remote for you to inspect: remove it there (or ask who pushed it), then pull again."
                )
        repo.stage_cache.transfer(staged, repo.cache.legacy)
    return len(entries)


def _objects_of(repo, stages: list[str] | None) -> set:
    """The objects that the local run entries of `stages` (their commands; all entries when None) name."""
    keep = None
    if stages is not None:
        keep = {s.cmd for target in stages for s in repo.stage.collect(target)}
    entries = []
    for key, value, path in _entries(Path(repo.stage_cache.cache_dir)):
        if keep is None or read_yaml(path.read_text(), str(path)).get("cmd") in keep:  # checked entries
            entries.append((key, value))
    used = repo.stage_cache.get_used_objs(entries)
    return set().union(*used.values()) if used else set()


def push(root: Path, remote: str | None = None, targets: list[str] | None = None) -> Transfer:
    """Send the workspace's outputs (of `targets`' stages, or all), the run-cache and every object its entries name
    to the remote; the local entries are checked first (`check_local_runs`), so that no bad one spreads."""
    # DVC resolves targets, and builds each run entry's stage from "dvc.yaml", relative to the cwd
    with chdir(root), _repo(root) as repo:
        name = _remote_name(repo, remote)
        before = check_local_runs(root, repo)
        folder = _check_folder(root, repo, name, pulling=False)
        with _transfer(name, "push", [folder]):
            outputs = repo.push(targets=targets, remote=name, run_cache=True)
            with repo.lock:
                result = repo.cloud.push(_objects_of(repo, None), remote=name)
            _complete(result, name, "push")
    return Transfer(max(0, outputs - before), before, len(result.transferred), len(result.failed))


def _complete(result, name: str, verb: str) -> None:
    """Refuse a transfer that left objects behind, as an OSError would be (`_transfer` words it)."""
    if result.failed:
        raise OSError(f"{len(result.failed)} object(s) could not be {'sent' if verb == 'push' else 'fetched'}")


def pull(
    root: Path, remote: str | None = None, targets: list[str] | None = None, outputs: bool = True, new_ok: bool = False
) -> Transfer:
    """Fetch the remote's run entries, checked before they join the local run-cache (`fetch_runs`), the objects
    they name (those of `targets`' stages, or all), and, with `outputs`, the workspace's outputs of those stages
    (dvc.lock's). A folder remote that does not exist yet is refused, unless `new_ok` (a run that pulls what is
    there before it runs: a new team's remote is made by its first push)."""
    with chdir(root), _repo(root) as repo:
        name = _remote_name(repo, remote)
        check_local_runs(root, repo)
        folder = _check_folder(root, repo, name, pulling=not new_ok)
        if folder is not None and not folder.exists():
            return Transfer(0, 0, 0, 0)
        with _transfer(name, "pull", [Path(repo.cache.local.path).parents[1]]):
            runs = fetch_runs(root, repo, name)
            fetched = 0
            if outputs:  # dvc.lock's outputs that no one pushed are left missing: dvc exp run makes them
                fetched = repo.pull(targets=targets, remote=name, allow_missing=True)["stats"]["fetched"]
            with repo.lock:
                result = repo.cloud.pull(_objects_of(repo, targets), remote=name)
            _complete(result, name, "pull")
    return Transfer(fetched, runs, len(result.transferred), len(result.failed))
