"""The ranks of a benchmark evaluation started by ``torchrun``, ``deepspeed`` or ``srun`` (or one process).

    rank, world, device = eval_ranks("cuda")   # torchrun --nproc_per_node 8 tools/evaluate.py ...

Each rank holds the whole model (evaluation needs no ZeRO sharding) on its own device, generates
its share of the batches and the answers are gathered with ``all_gather_object``: gloo on CPU,
NCCL on GPUs. One process without the launchers' variables is rank 0 of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from sinktrain.errors import SinkTrainError
from sinktrain.train.launch_env import resolve_launch


def eval_ranks(device: str) -> tuple[int, int, str]:
    """(rank, world size, this rank's device), with the process group started when world > 1."""
    launch = resolve_launch(os.environ)  # a launcher's or srun's variables (sinktrain.train.launch_env)
    if launch.world_size == 1:
        return 0, 1, device
    launch.export()
    rank, world, local_rank = launch.rank, launch.world_size, launch.local_rank
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise SinkTrainError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) here; start one process per GPU")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world)
    return rank, world, device


def gather(value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def finish() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
