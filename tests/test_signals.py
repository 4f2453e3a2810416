"""A SIGTERM (scancel, `kill`, a container stopping) stops a stage or a named run as Ctrl-C does: every child
process stops with it, no temporary file is left, and the last line says what was and was not written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from dtrepro.pipeline.commands import repo_env

from helpers import COLLECTED, ROOT, one_line, params, run


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_to_a_named_run_stops_dvc_and_its_stage_and_keeps_the_earlier_experiment(copy_done):
    """Before, the driver died and the stage DVC was running went on writing into the workspace."""
    repo = copy_done
    cmd = [sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", "-S", "train.steps=5000"]
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


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.0, 0.15, 0.3, 0.45])
def test_ctrl_c_while_a_stage_imports_torch_is_one_line_not_a_traceback(after_s):
    """Before, a Ctrl-C in the first seconds of a stage printed a traceback through torch's import machinery; and
    one that landed in torch's C++ initialisation was lost (the stage went on, exit 0) or aborted the process
    (pybind11's std::terminate, exit -6). `after_s` after torch's libraries load: numpy imported from torch's C
    code, torch.distributed's C++ init, numpy.random's Cython modules."""
    cmd = [sys.executable, "stages/train.py", "--help"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=repo_env(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    maps = f"/proc/{proc.pid}/maps"
    deadline = time.monotonic() + 60
    while "libtorch" not in open(maps).read():  # torch's libraries loaded: its Python modules importing now
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode not in (0, -signal.SIGABRT) and "Traceback" not in stderr, (proc.returncode, stderr)
    assert stderr.startswith("interrupted by Ctrl-C (SIGINT): train.py stopped") and stderr.count("\n") == 1, stderr


SWALLOWS = """import os, signal, time
try:  # as an extension module's C initialisation does with an error raised in Python code it calls
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
except BaseException:
    print("lost")
"""


@pytest.mark.parametrize("after", ["time.sleep(5)", "pass"])
def test_a_ctrl_c_inside_an_import_is_raised_after_it(tmp_path, after):
    """A Ctrl-C that lands in an import whose caller clears errors is raised once the import is over: in a long
    program a moment later, in one that ends first by its stage guard (before, the program went on, exit 0)."""
    (tmp_path / "swallows.py").write_text(SWALLOWS)
    script = tmp_path / "prog.py"
    script.write_text(
        "import time\nfrom dtrepro.runtime.stage import run_stage, setup\nsetup()\nimport swallows\nprint('imported')\n"
        f"def main(argv):\n    {after}\n    print('finished')\nrun_stage(main)\n"
    )
    env = repo_env(ROOT)
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout == "imported\n" and proc.returncode != 0, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("interrupted by Ctrl-C (SIGINT): prog.py stopped"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


def _in_pid_namespace(repo, *cmd: str) -> subprocess.Popen:
    """`cmd` as PID 1 of a new PID namespace (as a container runs its command), in `repo`."""
    return subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", *cmd],
        cwd=repo,
        env={**repo_env(repo), "TQDM_DISABLE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _training(proc: subprocess.Popen) -> psutil.Process:
    """The namespace's PID 1 (as the host sees it), once a train stage runs inside."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children(recursive=True)
        if any("stages/train.py" in " ".join(k.cmdline()) for k in kids if k.is_running()):
            time.sleep(1)  # into its steps
            return psutil.Process(proc.pid).children()[0]
        time.sleep(0.2)
    raise AssertionError(f"no train stage started: {proc.args}")


def _rwlock(repo) -> dict:
    path = repo / ".dvc" / "tmp" / "rwlock"
    return json.loads(path.read_text() or "{}") if path.exists() else {}


def _docker_stop(init: psutil.Process, proc: subprocess.Popen) -> float:
    """What `docker stop` does to a container's PID 1: SIGTERM, 10 s, then SIGKILL. Returns the seconds it took."""
    t0 = time.monotonic()
    init.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        init.send_signal(signal.SIGKILL)
        proc.wait(30)
    return time.monotonic() - t0


@pytest.mark.slow
def test_the_image_s_init_stops_dvc_as_a_ctrl_c_does_when_docker_stops_it(copy_done):
    """The image's ENTRYPOINT (dumb-init, SIGTERM passed on as SIGINT) as PID 1 of a PID namespace: `docker stop`'s
    SIGTERM stops dvc and its stage cleanly within the 10 s, DVC's lock is released, and `dvc status` works."""
    entry = json.loads(re.search(r"ENTRYPOINT (\[.*\])", (ROOT / "Dockerfile").read_text())[1])
    proc = _in_pid_namespace(copy_done, *entry, "dvc", "exp", "run", "-S", "train.steps=2000")
    took = _docker_stop(_training(proc), proc)
    output = proc.stdout.read()
    assert took < 10, output  # stopped by the SIGTERM, not by docker's SIGKILL
    assert not any(_rwlock(copy_done).get(k) for k in ("read", "write")), _rwlock(copy_done)
    assert not temporaries(copy_done)
    status = run(["dvc", "status"], copy_done)
    assert status.returncode == 0 and "lock" not in status.stdout + status.stderr, status.stdout + status.stderr


@pytest.mark.slow
def test_a_lock_left_by_dvc_killed_as_pid_1_does_not_block_the_next_run(copy_done):
    """dvc itself as PID 1 ignores SIGTERM, docker stop then kills it, and its lock names PID 1, which always exists:
    a named run treats a lock whose PID is no DVC process as stale, removes it and runs."""
    proc = _in_pid_namespace(copy_done, "dvc", "exp", "run", "-S", "train.steps=2000")
    assert _docker_stop(_training(proc), proc) >= 10  # SIGTERM ignored by a PID 1 without handlers
    assert any(e["pid"] == 1 for e in _rwlock(copy_done)["write"].values()), _rwlock(copy_done)
    again = run([sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", "report"], copy_done, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not any(_rwlock(copy_done).get(k) for k in ("read", "write"))
