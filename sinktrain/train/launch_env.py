"""Which rank of how many this process is, from whatever started it, with the contradictions that
would make ranks collide refused before any process group forms.

    env = resolve_launch(os.environ)      # LaunchEnv(rank, world_size, local_rank, master_addr, master_port, source)
    env.export()                          # RANK, WORLD_SIZE, ... as torch.distributed reads them

* a launcher (torchrun, ``deepspeed``) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT: used as is;
* ``srun`` starting one process per rank itself (no launcher) sets only Slurm's SLURM_PROCID,
  SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_STEP_NODELIST: translated, the first node of the step
  as the master and a port derived from the job id (every task computes the same one);
* nothing: one process, rank 0 of 1 (a laptop, a debugger, a batch script's own shell).

Inside an srun step with several tasks, a launcher in each task must know about the others: a
launcher that counts only its own node's processes (``deepspeed`` without --num_nodes/--node_rank,
torchrun without --nnodes) would make every node rank 0 of a world of one node and all write the
same output directory; that is refused, as are Slurm variables that contradict each other.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from sinktrain.errors import SinkTrainError

PORT_BASE, PORT_SPAN = 20000, 20000  # a Slurm-derived master port: PORT_BASE + job id mod PORT_SPAN
SLURM_HINT = "start it with slurm/train.sbatch (one launcher per node), or `srun --ntasks-per-node=GPUS python recipes/...`"


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "launcher" | "slurm" | "single"

    def export(self) -> None:
        os.environ.update(
            RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK=str(self.local_rank),
            MASTER_ADDR=self.master_addr, MASTER_PORT=str(self.master_port),
        )


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list ("gpu[03-05,09],cpu1" -> "gpu03"), as `scontrol show hostnames` would list it."""
    first = re.match(r"([^,\[]*(\[[^\]]*\][^,\[]*)*)", nodelist).group(1)
    return re.sub(r"\[([^],-]+)[^]]*\]", r"\1", first)


def integer(environ, name: str) -> int:
    try:
        return int(environ[name])
    except ValueError as err:
        raise SinkTrainError(f"{name}={environ[name]!r} is not a number; the launcher's environment is broken") from err


def from_launcher(environ) -> LaunchEnv:
    missing = [name for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in environ]
    if missing:
        raise SinkTrainError(f"RANK is set but {', '.join(missing)} not: start the run with torchrun or deepspeed, or unset RANK")
    rank, world = integer(environ, "RANK"), integer(environ, "WORLD_SIZE")
    if not 0 <= rank < world:
        raise SinkTrainError(f"RANK={rank} is outside WORLD_SIZE={world}; the launcher's variables contradict each other")
    local = integer(environ, "LOCAL_RANK") if "LOCAL_RANK" in environ else 0
    check_launcher_in_step(environ, world)
    return LaunchEnv(rank, world, local, environ["MASTER_ADDR"], integer(environ, "MASTER_PORT"), "launcher")


def check_launcher_in_step(environ, world: int) -> None:
    """A launcher per srun task must span all tasks: its world is the tasks times its own processes."""
    tasks = int(environ.get("SLURM_STEP_NUM_TASKS", "1"))
    per_task = int(environ.get("LOCAL_WORLD_SIZE", environ.get("LOCAL_SIZE", world)))  # torchrun's, deepspeed's
    if tasks > 1 and world != tasks * per_task:
        raise SinkTrainError(
            f"this srun step runs {tasks} tasks, but the launcher in this one counts WORLD_SIZE={world} with "
            f"{per_task} process(es) per task: each launcher must know the others (torchrun --nnodes {tasks} "
            f"--rdzv_id $SLURM_JOB_ID ...); {SLURM_HINT}"
        )


def from_slurm(environ) -> LaunchEnv:
    rank, tasks = integer(environ, "SLURM_PROCID"), integer(environ, "SLURM_STEP_NUM_TASKS")
    if not 0 <= rank < tasks:
        raise SinkTrainError(f"SLURM_PROCID={rank} is outside SLURM_STEP_NUM_TASKS={tasks}; the Slurm environment contradicts itself")
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise SinkTrainError(f"srun started {tasks} tasks but set no SLURM_STEP_NODELIST to find the master node; {SLURM_HINT}")
    port = PORT_BASE + integer(environ, "SLURM_JOB_ID") % PORT_SPAN if "SLURM_JOB_ID" in environ else PORT_BASE
    local = integer(environ, "SLURM_LOCALID") if "SLURM_LOCALID" in environ else 0
    return LaunchEnv(rank, tasks, local, first_host(nodelist), port, "slurm")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resolve_launch(environ) -> LaunchEnv:
    if "RANK" in environ:
        return from_launcher(environ)
    if int(environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in environ:
        return from_slurm(environ)
    return LaunchEnv(0, 1, 0, "127.0.0.1", free_port(), "single")
