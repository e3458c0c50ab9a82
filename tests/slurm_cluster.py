"""A real two-node Slurm cluster on this machine, for tests: munged, slurmctld and two slurmd
(NodeName n1 and n2, both on 127.0.0.1, each on its own port), CPU only.

    with SlurmCluster() as cluster:                     # or skip_unless_slurm() first, in a fixture
        job = cluster.sbatch("slurm/train.sbatch", "recipes/...", env=env, options=["-N", "2"])
        cluster.wait_state(job, {"COMPLETED"}, timeout=300)
        cluster.scontrol("requeue", job)

Needs root and Debian's packages (`apt-get install --no-install-recommends slurmctld slurmd
slurm-client munge`; .ci/run installs them). It works because Debian builds slurmd with
--enable-multiple-slurmd: several `slurmd -N NAME` on one host, told apart by their Port. Every
daemon it starts is stopped by its own pid on exit; a munged that was already running is left
alone. The config lives in a short temporary directory: slurmstepd's Unix sockets sit under
SlurmdSpoolDir and a socket path must stay under 108 characters.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PACKAGES = "slurmctld slurmd slurm-client munge"
NODES = ("n1", "n2")
MUNGE_PID = Path("/run/munge/munged.pid")

CONFIG = """\
ClusterName=sinktest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again cred_expire seconds after it ended (default 120; 5 is the minimum)
AuthInfo=cred_expire=5
StateSaveLocation={dir}/ctld
SlurmctldPidFile={dir}/slurmctld.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdSpoolDir={dir}/spool/%n
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmdLogFile={dir}/slurmd-%n.log
# no cgroups in a container: a step's processes are the descendants of its slurmstepd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# whole nodes: one job on both nodes at a time, as a multi-node training job asks
SelectType=select/linear
# trust CPUs/RealMemory below whatever the host has
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
JobRequeue=1
# SIGTERM -> SIGKILL gap on scancel / requeue: room for the step-boundary checkpoint
KillWait=30
# keep finished jobs visible to `scontrol show job` (there is no accounting database)
MinJobAge=3600
NodeName=n1 NodeHostname={host} NodeAddr=127.0.0.1 Port={port1} CPUs={cpus} RealMemory=2000 State=UNKNOWN
NodeName=n2 NodeHostname={host} NodeAddr=127.0.0.1 Port={port2} CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
"""


def skip_unless_slurm() -> None:
    """Skip the calling test (module, fixture) with the reason, where this machine cannot run the cluster."""
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip(f"Slurm is not installed: apt-get install -y --no-install-recommends {PACKAGES} (.ci/run does it)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs its daemons and jobs as root")


def free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def munge_works() -> bool:
    cred = subprocess.run(["munge", "-n"], capture_output=True)
    return cred.returncode == 0 and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True).returncode == 0


class SlurmCluster:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sst.", dir="/tmp"))  # short: socket paths < 108 chars
        self.conf = self.dir / "slurm.conf"
        self.daemons: list[subprocess.Popen] = []
        self.munged_pid: int | None = None
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.start_munge()
        ctld, port1, port2 = free_ports(3)
        (self.dir / "ctld").mkdir()
        (self.dir / "spool").mkdir()
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(CONFIG.format(dir=self.dir, ctld_port=ctld, port1=port1, port2=port2, host=host, cpus=os.cpu_count()))
        self.spawn("slurmctld", "-D", "-c", "-i", "-f", str(self.conf))  # -c: cold start, no saved state
        self.wait_until(lambda: "UP" in self.run("scontrol", "ping", check=False), 30, "slurmctld to answer")
        for node in NODES:
            self.spawn("slurmd", "-D", "-N", node, "-f", str(self.conf))
        self.wait_until(lambda: len(self.run("sinfo", "-h", "-N", "-t", "idle", "-o", "%N").split()) == len(NODES), 60, "both nodes idle")

    def start_munge(self) -> None:
        if munge_works():
            return
        subprocess.run(["/etc/init.d/munge", "start"], check=True, capture_output=True)  # the script, not `service`: no policy-rc.d
        self.wait_until(munge_works, 10, "munged")
        self.munged_pid = int(MUNGE_PID.read_text())

    def spawn(self, *command: str) -> None:
        log = open(self.dir / f"{command[0]}-{len(self.daemons)}.out", "w")
        self.daemons.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def stop(self) -> None:
        if self.daemons and all(daemon.poll() is None for daemon in self.daemons):
            self.cancel_all()  # a job's processes belong to slurmstepd, which outlives slurmd
        for daemon in reversed(self.daemons):  # slurmd first: they kill what runs on them
            daemon.terminate()
        for daemon in reversed(self.daemons):
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        self.daemons.clear()
        if self.munged_pid is not None:
            os.kill(self.munged_pid, signal.SIGTERM)
            self.munged_pid = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def cancel_all(self, timeout: float = 60) -> None:
        self.run("scancel", "--partition", "debug", check=False)
        end = time.monotonic() + timeout
        while self.run("squeue", "-h", "-t", "RUNNING,COMPLETING", check=False).strip() and time.monotonic() < end:
            time.sleep(0.5)

    def wait_until(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not ready():
            dead = [d.args[0] for d in self.daemons if d.poll() is not None]
            if dead or time.monotonic() > end:
                raise RuntimeError(f"waiting for {what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'}\n{self.logs()}")
            time.sleep(0.3)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}" for path in sorted(self.dir.glob("*.out")) + sorted(self.dir.glob("*.log")))

    # --- clients ---------------------------------------------------------------------------------

    def run(self, *command: str, check: bool = True, env: dict | None = None) -> str:
        done = subprocess.run(command, capture_output=True, text=True, env={**(env or os.environ), "SLURM_CONF": str(self.conf)})
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout

    def scontrol(self, *args: str, check: bool = True) -> str:
        return self.run("scontrol", *args, check=check)

    def sbatch(self, script: str, *args: str, env: dict | None = None, options: tuple | list = (), cwd: str | Path | None = None) -> str:
        """Submit ``script args`` from ``cwd`` (the job's working directory) with ``env`` as the job's
        environment (sbatch exports the submitter's); returns the job id."""
        command = ["sbatch", "--parsable", *options, script, *args]
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env={**(env or os.environ), "SLURM_CONF": str(self.conf)})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, StdOut, ...)."""
        text = self.scontrol("show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_state(self, job_id: str, states: set[str] | str, timeout: float) -> dict[str, str]:
        """Wait until the job is in one of ``states`` (e.g. {"COMPLETED"}); fail early on a final state not asked for."""
        states = {states} if isinstance(states, str) else set(states)
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
        end = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info["JobState"] in states:
                return info
            if info["JobState"] in final or time.monotonic() > end:
                raise AssertionError(f"job {job_id} is {info['JobState']} (Reason={info.get('Reason')}), waited for {sorted(states)}\n{self.logs()}")
            time.sleep(0.5)
