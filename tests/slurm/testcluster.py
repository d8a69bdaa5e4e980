"""A one-node SLURM cluster on this host, in a temporary directory, for tests/test_slurm.py.

munged, slurmctld and slurmd run as root with every path (config, key, socket, state, spool,
logs, pid files) under ``root``; clients find the cluster through ``SLURM_CONF``. The node
declares four A6000s (``Gres=gpu:a6000:4``, character devices made with mknod) and is in two
partitions, ``cpu`` (default) and ``gpu``. No accounting (no slurmdbd), no cgroups.

Only the daemons started here are stopped, by the pids in their pid files.

By hand (as root):  python tests/slurm/testcluster.py up /tmp/sg-slurm   (prints SLURM_CONF)
                    python tests/slurm/testcluster.py down /tmp/sg-slurm
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")

# What the node declares beyond this host (slurmd accepts it with config_overrides): enough
# CPUs and memory for the workflow profile's per-rule requests (train: 32 CPUs, 4 GPUs), so
# the test submits the profile's real requests. Jobs share the host's real cores.
NODE_SOCKETS = 2
NODE_CORES_PER_SOCKET = 16
NODE_MEMORY_MB = 512_000
GPUS = 4
GPU_TYPE = "a6000"
PARTITIONS = ("cpu", "gpu")


class ClusterError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    return [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
            if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def install_packages(timeout: int = 900) -> str | None:
    """apt-get install Debian's SLURM and munge when missing; None, or why it could not."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return "SLURM/munge are not installed and installing them needs root"
    if shutil.which("apt-get") is None:
        return "SLURM/munge are not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} timed out after {timeout} s"
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed: {(proc.stdout + proc.stderr)[-800:]}"
    if missing := missing_binaries():
        return f"installed {' '.join(PACKAGES)} but still missing {missing}"
    return None


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.log = self.root / "log"
        self.run = self.root / "run"
        self.munge_socket = self.run / "munge.socket"

    # -- configuration ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment for SLURM clients (sbatch, squeue, Snakemake) of this cluster."""
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("SLURM_") or k.startswith("SBATCH_")
                       or k.startswith("SRUN_"))}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '')}"
        return env

    def pidfile(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"

    def write_config(self) -> None:
        etc, state, spool, dev, bin_ = (
            self.root / d for d in ("etc", "state", "spool", "dev", "bin"))
        for d in (etc, state, spool, dev, bin_, self.log, self.run):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run, 0o755)  # munged refuses a socket dir others may write to
        key = etc / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        # Four GPU "devices": character devices (like /dev/null) that slurmd can stat.
        for i in range(GPUS):
            node = dev / f"nvidia{i}"
            if not node.exists():
                os.mknod(node, 0o666 | 0o020000, os.makedev(1, 3))
        (etc / "gres.conf").write_text(
            "AutoDetect=off\n"
            f"Name=gpu Type={GPU_TYPE} File={dev}/nvidia[0-{GPUS - 1}]\n"
        )
        (etc / "plugstack.conf").write_text("")
        # Inside a job, snakemake-executor-plugin-slurm-jobstep runs the rule under `srun` with
        # every SLURM_* variable but the job's id removed, SLURM_CONF too; a real cluster's
        # srun finds /etc/slurm/slurm.conf (or configless), this one's config is here.
        real_srun = shutil.which("srun") or "/usr/bin/srun"
        srun = bin_ / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {real_srun} "$@"\n')
        srun.chmod(0o755)
        (etc / "cgroup.conf").write_text("")
        cpus = NODE_SOCKETS * NODE_CORES_PER_SOCKET
        ctld_port, slurmd_port = _free_port(), _free_port()
        partitions = "\n".join(
            f"PartitionName={p} Nodes={self.host} MaxTime=INFINITE State=UP"
            + (" Default=YES" if i == 0 else "")
            for i, p in enumerate(PARTITIONS)
        )
        self.conf.write_text(f"""\
# Written by tests/slurm/testcluster.py: a one-node test cluster, no accounting.
ClusterName=skinground-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={self.pidfile("slurmctld")}
SlurmdPidFile={self.pidfile("slurmd")}
SlurmctldLogFile={self.log}/slurmctld.log
SlurmdLogFile={self.log}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={etc}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
LaunchParameters=use_interactive_step
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard={NODE_SOCKETS} \
CoresPerSocket={NODE_CORES_PER_SOCKET} ThreadsPerCore=1 RealMemory={NODE_MEMORY_MB} \
Gres=gpu:{GPU_TYPE}:{GPUS} State=UNKNOWN
{partitions}
""")

    # -- daemons ---------------------------------------------------------------------------

    def _pid(self, daemon: str) -> int | None:
        try:
            return int(self.pidfile(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _alive(self, daemon: str) -> bool:
        pid = self._pid(daemon)
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited

    def _start(self, daemon: str, cmd: list[str]) -> None:
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ClusterError(f"{daemon} did not start: {proc.stdout}{proc.stderr}\n"
                               + self.logs())
        deadline = time.monotonic() + 30
        while not self._alive(daemon):
            if time.monotonic() > deadline:
                raise ClusterError(f"{daemon}: no live pid in {self.pidfile(daemon)}\n"
                                   + self.logs())
            time.sleep(0.2)

    def start(self) -> None:
        self.write_config()
        etc = self.root / "etc"
        self._start("munged", [
            _sbin("munged"), "--force", f"--key-file={etc}/munge.key",
            f"--socket={self.munge_socket}", f"--pid-file={self.pidfile('munged')}",
            f"--log-file={self.log}/munged.log", f"--seed-file={self.run}/munged.seed",
        ])
        # -i: ignore state from an earlier run of this directory
        self._start("slurmctld", [_sbin("slurmctld"), "-i", "-f", str(self.conf)])
        self._start("slurmd", [_sbin("slurmd"), "-f", str(self.conf)])

    def wait_idle(self, timeout: float = 90) -> None:
        """Until sinfo shows the node idle in every partition."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], env=self.env(),
                                  capture_output=True, text=True, timeout=30)
            out = proc.stdout + proc.stderr
            states = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
            if states and all(s == "idle" for s in states.values()):
                return
            time.sleep(1)
        raise ClusterError(f"node not idle after {timeout} s: {out}\n{self.logs()}")

    def stop(self) -> None:
        """Stop the daemons this cluster started (by their pid files), slurmd first."""
        for daemon in DAEMONS:
            pid = self._pid(daemon)
            if pid is None or not self._alive(daemon):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while self._alive(daemon) and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._alive(daemon):
                os.kill(pid, signal.SIGKILL)

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job of this cluster (best effort) and wait until none is left."""
        if not self._alive("slurmctld"):
            return
        subprocess.run(["scancel", "--full", "--user", "root"], env=self.env(),
                       capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = subprocess.run(["squeue", "-h", "-t", "PD,R,CG,CF,S"], env=self.env(),
                                  capture_output=True, text=True, timeout=30)
            if proc.returncode != 0 or not proc.stdout.strip():
                return
            time.sleep(1)

    # -- inspection ------------------------------------------------------------------------

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for f in sorted(self.log.glob("*.log")):
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def scontrol_jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld still knows (MinJobAge=3600 s): id -> `scontrol show job -d`
        fields."""
        proc = subprocess.run(["scontrol", "-o", "-d", "show", "job"], env=self.env(),
                              capture_output=True, text=True, timeout=30)
        jobs = {}
        for line in proc.stdout.splitlines():
            if not line.startswith("JobId="):
                continue
            fields = dict(re.findall(r"(\S+?)=(\S*)", line))
            jobs[fields["JobId"]] = {**fields, "_line": line}
        return jobs


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    cluster = Cluster(Path(argv[2]))
    if argv[1] == "up":
        if why := install_packages():
            print(why, file=sys.stderr)
            return 1
        cluster.start()
        cluster.wait_idle()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
