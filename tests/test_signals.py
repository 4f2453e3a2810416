"""A SIGTERM (scancel, `kill`, a container stopping) stops a stage or a named run as Ctrl-C does: every child
process stops with it, no temporary file is left, and the last line says what was and was not written."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from dtrepro.commands import repo_env

from helpers import COLLECTED, ROOT, one_line, params, run

pytestmark = pytest.mark.slow


def children_once_running(proc: subprocess.Popen, at_least: int, timeout_s: float = 120) -> list[psutil.Process]:
    """`proc`'s descendants, once there are `at_least` of them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children(recursive=True)
        if len(kids) >= at_least:
            return kids
        time.sleep(0.2)
    raise AssertionError(f"{proc.args} did not start {at_least} processes")


def temporaries(folder) -> list:
    return [p for p in folder.rglob("*.tmp-*") if ".git" not in p.parts and ".dvc" not in p.parts]


def test_sigterm_to_the_source_stage_stops_its_collection_workers_and_writes_nothing(tmp_path):
    """Before, the stage died where it stood and its ARS worker processes ran on, orphaned."""
    params_path, out = tmp_path / "params.yaml", tmp_path / "out"
    params_path.write_text(yaml.safe_dump(params(study={"datasets": [COLLECTED]})))
    cmd = [sys.executable, "stages/source.py", "--params", str(params_path), "--dataset", COLLECTED]
    cmd += ["--output", str(out / "raw.hdf5"), "--policy", str(out / "behaviour.json")]
    cmd += ["--metrics", str(out / "source.json"), "--minari-dir", str(out / "minari")]
    env = {**repo_env(ROOT), "DTREPRO_CPUS": "2"}  # two collection workers
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kids = children_once_running(proc, 3)  # the forkserver and two workers
    time.sleep(2)  # the workers busy with episodes
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr
    assert "interrupted by SIGTERM: source.py stopped before it finished" in one_line(stderr)
    _, alive = psutil.wait_procs(kids, timeout=20)
    assert not alive, alive
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))  # nothing half-written


def test_sigterm_to_a_named_run_stops_dvc_and_its_stage_and_keeps_the_earlier_experiment(copy_done):
    """Before, the driver died and the stage DVC was running went on writing into the workspace."""
    repo = copy_done
    cmd = [sys.executable, "-m", "dtrepro.cli", "run", "smoke", "-S", "train.steps=5000"]
    named = subprocess.Popen(
        cmd, cwd=repo, env=repo_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in named.stdout:
        output.append(line)
        if line.startswith("Running stage 'train@"):
            break
    kids = children_once_running(named, 2)  # dvc and the stage it runs (through a shell or not)
    time.sleep(3)  # training
    named.send_signal(signal.SIGTERM)
    output += named.stdout.readlines()
    assert named.wait(timeout=180) == 130, "".join(output)
    text = one_line("".join(output))
    assert "interrupted by SIGTERM: named run 'smoke' stopped" in text, text
    _, alive = psutil.wait_procs(kids, timeout=20)
    assert not alive, alive
    assert not temporaries(repo), temporaries(repo)
    names = run(["dvc", "exp", "list", "--all-commits", "--name-only"], repo).stdout.split()
    assert "smoke" in names and "smoke-pending" not in names
    assert f"train@{COLLECTED}-5-0" in run(["dvc", "status"], repo).stdout  # not recorded as done


def test_ctrl_c_while_a_stage_imports_torch_is_one_line_not_a_traceback(tmp_path):
    """Before, a Ctrl-C in the first seconds of a stage printed a traceback through torch's import machinery."""
    cmd = [sys.executable, "stages/train.py", "--help"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=repo_env(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    maps = f"/proc/{proc.pid}/maps"
    deadline = time.monotonic() + 60
    while "libtorch" not in open(maps).read():  # torch's libraries loaded: its Python modules importing now
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr
    assert "interrupted by Ctrl-C (SIGINT): train.py stopped while starting; nothing was written." in stderr
