"""Process group start-up for recipes and tools: one rank without a launcher, and no leaked shared memory.

DeepSpeed's CPU all-reduce (``ops/csrc/cpu/comm/shm.cpp``, used whenever all ranks share one
machine) creates one ~66 MB POSIX shared-memory segment per rank, named after MASTER_ADDR,
MASTER_PORT and the rank, and never unlinks it. Every run, finished or killed, would leave them
in /dev/shm (RAM), and with a new port per run they pile up until the machine swaps or runs dry.
``shm_initialize`` returns only once the rank has mapped every peer's segment, so after a barrier
no one needs the names any more: unlinking them then keeps the mappings alive and lets the kernel
free the memory when the last rank exits, however it exits.
"""

from __future__ import annotations

import os
from pathlib import Path

import deepspeed
import torch.distributed as dist

from sinktrain.train.launch_env import resolve_launch

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "deepspeed_allreduce_buffer"


def launched() -> bool:
    """Whether a launcher or srun made this process one rank of several (else: one process)."""
    return "OMPI_COMM_WORLD_RANK" in os.environ or resolve_launch(os.environ).world_size > 1


def allreduce_buffer_name(rank: int) -> str:
    """The segment name DeepSpeed's shm all-reduce gives ``rank`` (``shm_initialize``)."""
    master = f"{os.environ.get('MASTER_ADDR', '')}_{os.environ.get('MASTER_PORT', '')}"
    return f"{SHM_PREFIX}_{os.getuid()}_{master}_{rank}"


def release_allreduce_buffer(rank: int) -> None:
    """Unlink this rank's segment name; call only after a barrier that follows init on every rank."""
    (SHM_DIR / allreduce_buffer_name(rank)).unlink(missing_ok=True)


def init_distributed() -> tuple[int, int]:
    """Start (or join) the process group; returns (rank, world size). Ranks come from the launcher,
    from srun's variables or, without either, one process (sinktrain.train.launch_env); under MPI
    DeepSpeed finds them itself."""
    if "OMPI_COMM_WORLD_RANK" not in os.environ:
        resolve_launch(os.environ).export()
    deepspeed.init_distributed()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    dist.barrier()  # every rank has mapped every peer's segment
    release_allreduce_buffer(rank)
    return rank, world_size
