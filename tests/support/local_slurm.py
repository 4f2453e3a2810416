"""A real Slurm cluster of one node on localhost, for the tests and bench/cluster.py: Debian's slurm-wlm and munge.

Every daemon runs as the calling user with every file in one folder (its own munge key and socket,
other ports than a system Slurm's), so nothing needs root and nothing outside the folder changes; such
a cluster runs that user's jobs only. The node has this machine's CPUs and memory, `select/cons_tres`
with a default memory per CPU (without one each job takes the whole node and array tasks run one at a
time). Clients find it through SLURM_CONF. Every daemon is stopped by its PID at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def installed() -> bool:
    return all(shutil.which(d) or Path(f"/usr/sbin/{d}").exists() for d in DAEMONS) and bool(shutil.which("sbatch"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    """`with LocalSlurm(folder) as env:` a running cluster; `env` is the environment its clients need."""

    def __init__(self, folder: Path, cpus: int | None = None, memory_mb: int | None = None):
        self.folder = Path(folder)
        self.cpus = cpus or os.cpu_count() or 1
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self.memory_mb = memory_mb or int(total * 0.9)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.procs: list[subprocess.Popen] = []

    def _config(self) -> Path:
        f = self.folder
        for sub in ("state", "spool", "log", "munge"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        node = socket.gethostname().split(".")[0]
        self.node = node
        lines = {
            "ClusterName": "dtrepro",
            "SlurmctldHost": f"{node}(127.0.0.1)",
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "SlurmUser": self.user,
            "SlurmdUser": self.user,
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={f / 'munge' / 'munge.socket'}",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "DefMemPerCPU": self.memory_mb // self.cpus,
            "MailProg": "/bin/true",
            "ReturnToService": 2,
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "StateSaveLocation": f / "state",
            "SlurmdSpoolDir": f / "spool",
            "SlurmctldPidFile": f / "slurmctld.pid",
            "SlurmdPidFile": f / "slurmd.pid",
            "SlurmctldLogFile": f / "log" / "slurmctld.log",
            "SlurmdLogFile": f / "log" / "slurmd.log",
            "MinJobAge": 1,
        }
        text = "".join(f"{k}={v}\n" for k, v in lines.items())
        text += f"NodeName={node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN\n"
        text += "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        conf = f / "slurm.conf"
        conf.write_text(text)
        return conf

    def __enter__(self) -> dict[str, str]:
        conf, munge = self._config(), self.folder / "munge"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge.chmod(0o755)
        munged = [_exe("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={munge / 'munge.socket'}"]
        munged += [f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}"]
        munged += [f"--seed-file={munge / 'munged.seed'}"]
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        try:
            self._start(munged, munge / "munge.socket")
            self._start([_exe("slurmctld"), "-D", "-f", str(conf)])
            self._start([_exe("slurmd"), "-D", "-f", str(conf), "-N", self.node])
            self._wait_idle()
        except BaseException:
            self.__exit__()
            raise
        return self.env

    def _start(self, cmd: list[str], wait_for: Path | None = None) -> None:
        log = open(self.folder / "log" / f"{Path(cmd[0]).name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        deadline = time.monotonic() + 20
        while wait_for is not None and not wait_for.exists():
            if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                raise RuntimeError(f"{cmd[0]} did not start: {(self.folder / 'log').resolve()}")
            time.sleep(0.1)

    def _wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=self.env, capture_output=True, text=True)
            if out.stdout.strip() == "idle":
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node did not become idle; logs in {self.folder / 'log'}")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):  # slurmd, slurmctld, then munged
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
