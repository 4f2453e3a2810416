"""A team's remote: what it holds is untrusted and checked before use; what goes wrong with it is one paragraph.

Each trust case writes one bad entry into a real folder remote, as someone who can write it could, and a fresh
clone pulls: the pull stops with one paragraph naming the entry, nothing is written in the clone (no file outside
an output folder, no entry in its run-cache), and the entry stays on the remote. The failure cases use a remote
that is a file, one that does not exist, and real full or read-only disks (tmpfs mounts).
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.stage.cache import _get_cache_hash
from dvc.utils.serialize import dump_yaml, load_yaml

from helpers import COLLECTED, one_line, run

pytestmark = pytest.mark.slow
SOURCE = f"source@{COLLECTED}"


def ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def team(copy_done, tmp_path):
    """(the repository that ran, its folder remote after `dtrepro push`)."""
    remote = tmp_path / "remote"
    ok(run(["dvc", "remote", "add", "-d", "team", str(remote)], copy_done))
    ok(run(["git", "commit", "-q", "-am", "a remote for the team"], copy_done))
    ok(run([sys.executable, "-m", "dtrepro.pipeline.cli", "push"], copy_done))
    return copy_done, remote


def entry_of(remote: Path, cmd_part: str) -> tuple[Path, dict]:
    """The remote's run entry whose command holds `cmd_part`."""
    for path in sorted((remote / "runs").glob("*/*/*")):
        entry = load_yaml(str(path))
        if cmd_part in entry["cmd"]:
            return path, entry
    raise AssertionError(f"no run entry of {cmd_part}")


def write_entry(remote: Path, entry: dict, rename: bool = True) -> Path:
    """`entry` stored on the remote under the key and name its content hashes to (or, without `rename`, under
    the name it had)."""
    key = _get_cache_hash(copy.deepcopy(entry), key=True)
    value = _get_cache_hash(copy.deepcopy(entry)) if rename else "0" * 64
    path = remote / "runs" / key[:2] / key / value
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_yaml(str(path), entry)
    return path


def write_listing(remote: Path, items: list[dict]) -> str:
    """A folder listing stored on the remote under its own md5, as DVC stores one; its object id."""
    data = json.dumps(items, sort_keys=True).encode()
    md5 = hashlib.md5(data).hexdigest()
    path = remote / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{md5}.dir"


def clone(a: Path, where: Path) -> Path:
    ok(run(["git", "clone", "-q", str(a), str(where)], where.parent))
    return where


def refused(b: Path, *args: str) -> str:
    proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", *args], b, timeout=900)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return one_line(proc.stderr)


def test_a_listing_that_writes_outside_its_folder_is_refused_and_nothing_is_written(team, tmp_path):
    """The attack: a listing of source's Minari folder names ../../../src/sitecustomize.py (which Python would then
    run in every later stage) and a file outside the repository; a run entry of that stage points at it."""
    a, remote = team
    path, entry = entry_of(remote, "stages/source.py")
    folder = next(out for out in entry["outs"] if out["md5"].endswith(".dir"))
    payload = hashlib.md5(b"print('pwned')\n").hexdigest()
    (remote / "files" / "md5" / payload[:2]).mkdir(parents=True, exist_ok=True)
    (remote / "files" / "md5" / payload[:2] / payload[2:]).write_bytes(b"print('pwned')\n")
    for relpath in ("../../../src/sitecustomize.py", "../../../../x.txt"):
        forged = copy.deepcopy(entry)
        out = next(o for o in forged["outs"] if o["path"] == folder["path"])
        out["md5"] = write_listing(remote, [{"md5": payload, "relpath": relpath}])
        bad = write_entry(remote, forged)
        b = clone(a, tmp_path / f"b{len(relpath)}")
        message = refused(b, "pull")
        assert f"The DVC remote 'team' holds a run entry that dtrepro will not restore: {bad}" in message
        assert f"which writes '{relpath}', outside that folder" in message and "Nothing was pulled" in message
        assert not (b / "src/sitecustomize.py").exists() and not (tmp_path / "x.txt").exists()
        assert not list((b / ".dvc/cache/runs").glob("*/*/*"))  # nothing joined the clone's run-cache
        assert bad.exists()  # left on the remote for its owner
        # a named run that pulls checks the same, before DVC runs anything
        assert "holds a run entry that dtrepro will not restore" in refused(b, "run", "smoke", "--pull")
        assert not (b / "src/sitecustomize.py").exists()
        bad.unlink()


@pytest.mark.parametrize("damage", ["empty", "truncated", "renamed", "extra-output", "absolute-output"])
def test_a_run_entry_that_is_not_what_it_claims_is_refused(team, tmp_path, damage):
    a, remote = team
    path, entry = entry_of(remote, "stages/evaluate.py")
    if damage == "empty":  # an upload cut short before its first byte
        bad = path.with_name("1" * 64)
        bad.write_text("")
        expected = "is not a run entry in DVC's format"
    elif damage == "truncated":  # cut short after its command: valid YAML without outputs (DVC: KeyError 'outs')
        bad = path.with_name("1" * 64)
        bad.write_text(path.read_text()[:200])
        expected = "is not what its file name says"
    elif damage == "renamed":  # edited in place: the content no longer hashes to the file's name
        entry["outs"][0]["md5"] = "0" * 32
        bad = write_entry(remote, entry, rename=False)
        expected = "is not what its file name says"
    elif damage == "extra-output":  # an output its stage does not declare, keyed consistently
        entry["outs"].append({**entry["outs"][0], "path": "src/dtrepro/evil.py"})
        bad = write_entry(remote, entry)
        expected = "has the outputs ['reports/eval/"
    else:
        entry["outs"][0]["path"] = "/tmp/evil.json"
        bad = write_entry(remote, entry)
        expected = "names the path '/tmp/evil.json', which is not a plain path inside the workspace"
    b = clone(a, tmp_path / "b")
    message = refused(b, "pull")
    assert f"holds a run entry that dtrepro will not restore: {bad} {expected}" in message
    assert damage != "extra-output" or "'src/dtrepro/evil.py'], not those its stage declares in dvc.yaml" in message
    assert not list((b / ".dvc/cache/runs").glob("*/*/*")) and bad.exists()


def test_a_bad_entry_in_the_local_run_cache_is_moved_aside_before_a_run_or_a_push(team, tmp_path):
    """One that came by a plain `dvc pull --run-cache` (which checks nothing) or a write cut short."""
    a, _ = team
    local = next((a / ".dvc/cache/runs").glob("*/*/*"))
    local.write_text(local.read_text()[:100])
    message = refused(a, "push")
    aside = a / ".dvc/tmp/refused" / local.parent.name / local.name
    assert f"The local run-cache entry {local.relative_to(a)} is not a run entry" in message or str(local) in message
    assert f"was moved to {aside}" in message and aside.exists() and not local.exists()
    ok(run([sys.executable, "-m", "dtrepro.pipeline.cli", "push"], a))  # the rest is intact, and pushes


def test_a_forged_evaluation_is_refused_by_the_report_and_caught_by_verify(team, tmp_path):
    """An evaluate entry edited to point its CSV at made-up episodes, stored under their true MD5: the entry passes
    every check a pull makes (it is well formed), DVC restores it, and then the report refuses the evaluation (its
    episodes and its metrics disagree) and `dtrepro verify` runs the stage again and finds other scores. (Not the
    headline model's: the render stage, which replays its first episodes, would refuse that one first.)"""
    a, remote = team
    honest, entry = entry_of(remote, f"--checkpoints models/{COLLECTED}/k5-seed1")
    out = next(o for o in entry["outs"] if o["path"].endswith(".csv"))
    lines = (a / out["path"]).read_text().splitlines()
    header = lines[0].split(",")
    made_up = []
    for line in lines[1:]:
        cells = line.split(",")
        cells[header.index("return")], cells[header.index("normalized_score")] = "1580.0", "49.2"
        made_up.append(",".join(cells))
    data = "\n".join([lines[0], *made_up]) + "\n"
    md5 = hashlib.md5(data.encode()).hexdigest()
    (remote / "files" / "md5" / md5[:2]).mkdir(parents=True, exist_ok=True)
    (remote / "files" / "md5" / md5[:2] / md5[2:]).write_text(data)
    out.update(md5=md5, size=len(data))
    write_entry(remote, entry)
    honest.unlink()  # the forger replaces the honest entry (otherwise the newer of the two is restored)

    b = clone(a, tmp_path / "b")
    # made again from what the remote holds; without dvc.lock every stage comes from the run-cache (as in a named
    # run whose params differ from the committed ones)
    ok(run(["git", "rm", "-rq", "reports", "results", "dvc.lock"], b))
    ok(run([sys.executable, "-m", "dtrepro.pipeline.cli", "pull"], b))
    restored = run(["dvc", "exp", "run"], b, timeout=900)
    assert restored.returncode != 0
    message = one_line(restored.stdout + restored.stderr)
    assert f"reports/eval/{COLLECTED}/k5-seed1.csv and reports/eval/{COLLECTED}/k5-seed1.json do not agree" in message
    assert "49.2000" in message and "dtrepro verify" in message
    assert (b / out["path"]).read_text() == data  # DVC restored the forged episodes
    verified = run(
        [sys.executable, "-m", "dtrepro.pipeline.cli", "verify", f"evaluate@{COLLECTED}-5-1"], b, timeout=900
    )
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert f"MISMATCH evaluate@{COLLECTED}-5-1" in verified.stdout and "in its episodes is 49.2" in verified.stdout
    assert (b / out["path"]).read_text() == data  # verify changes nothing in the workspace


def test_verify_passes_an_honest_restore(team, tmp_path):
    a, _ = team
    b = clone(a, tmp_path / "b")
    ok(run([sys.executable, "-m", "dtrepro.pipeline.cli", "pull"], b))
    ok(run(["dvc", "exp", "run"], b, timeout=900))
    verified = ok(run([sys.executable, "-m", "dtrepro.pipeline.cli", "verify", "--sample", "2"], b, timeout=900))
    assert verified.stdout.count("ok       evaluate@") == 2, verified.stdout
    assert "2 of 2 stages agree" in verified.stdout
    trained = ok(
        run([sys.executable, "-m", "dtrepro.pipeline.cli", "verify", f"train@{COLLECTED}-1-1"], b, timeout=900)
    )
    assert "2 checkpoints identical, byte for byte" in trained.stdout


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size): a folder on a tmpfs of that size, unmounted at the end (a disk that fills, or is read-only)."""
    mounted = []

    def mount(size: str, name: str = "disk") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here (CI runs as root and can): {proc.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def objects_whole(folder: Path) -> bool:
    """Every object under a DVC cache or remote folder is what its name says; no temporary file is left."""
    return all(
        not path.name.startswith(".")
        and hashlib.md5(path.read_bytes()).hexdigest() == (path.parent.name + path.name).removesuffix(".dir")
        for path in (folder / "files" / "md5").glob("*/*")
    )


def remote_add(repo: Path, name: str, url: Path) -> None:
    ok(run(["dvc", "remote", "add", name, str(url)], repo))


def test_a_remote_that_is_a_file_or_missing_is_one_paragraph(copy_done, tmp_path):
    (tmp_path / "afile").write_text("")
    remote_add(copy_done, "f", tmp_path / "afile")
    remote_add(copy_done, "gone", tmp_path / "gone")
    for verb in ("push", "pull"):
        message = refused(copy_done, verb, "-r", "f")
        assert f"The DVC remote 'f' is {tmp_path / 'afile'}, which is a file, not a folder" in message
    message = refused(copy_done, "pull", "-r", "gone")
    assert f"The DVC remote 'gone' is {tmp_path / 'gone'}, which does not exist, so there is nothing to pull" in message


def test_a_full_or_read_only_remote_stops_a_push_with_nothing_half_written(copy_done, tmpfs):
    full = tmpfs("300k", "full")
    remote_add(copy_done, "full", full / "cache")
    message = refused(copy_done, "push", "-r", "full")
    assert "Push to the DVC remote 'full' failed: a disk is full" in message and "No space left on device" in message
    assert "half-written object(s) were removed" in message and objects_whole(full / "cache")
    assert not [p for p in (full / "cache").rglob(".*") if p.is_file()]
    frozen = tmpfs("10m", "frozen")
    subprocess.run(["mount", "-o", "remount,ro", str(frozen)], check=True)
    remote_add(copy_done, "frozen", frozen)
    assert "Read-only file system" in refused(copy_done, "push", "-r", "frozen")


def test_a_pull_into_a_full_disk_leaves_only_whole_objects(team, tmp_path, tmpfs):
    a, _ = team
    b = clone(a, tmp_path / "b")
    cache = tmpfs("400k", "cache")
    ok(run(["dvc", "cache", "dir", "--local", str(cache)], b))
    message = refused(b, "pull")
    assert "Pull from the DVC remote 'team' failed: a disk is full" in message
    assert objects_whole(cache) and not [p for p in cache.rglob(".*") if p.is_file()]
