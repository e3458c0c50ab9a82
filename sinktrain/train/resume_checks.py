"""What a checkpoint must share with the run that resumes it, checked before any weight loads.

A requeued or resumed job continues the checkpoint's global sample order, so it must stream the
same data (same shards, same sample counts) with the same global batch; the micro-batch size is
the unit lanes are cut in (sinktrain.data.stream checks it). Anything else is refused with both
values named. On another number of ranks the gradient accumulation changes to keep the global
batch, and the weights load through DeepSpeed's universal checkpoint (sinktrain.train.elastic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from sinktrain.data.order import default_lanes
from sinktrain.errors import SinkTrainError

logger = logging.getLogger("sinktrain")


def data_identity(spec: str, shards: list[str], sizes: list[int]) -> dict:
    """What the checkpoint records of --data: the spec as typed, and a digest of the shards' names
    and sample counts, in order (not their folder: shards copied elsewhere, e.g. to a node's local
    disk after a requeue, are the same data)."""
    names = [os.path.basename(url) for url in shards]
    digest = hashlib.sha256(json.dumps([names, sizes]).encode()).hexdigest()[:16]
    return {"spec": spec, "shards": len(shards), "samples": sum(sizes), "digest": digest}


def describe(data: dict) -> str:
    return f"{data['spec']!r} ({data['shards']} shards, {data['samples']} samples)"


def ranks_and_accumulation(state: dict, where: Path, world_size: int, settings, typed: bool = False) -> tuple[int, int]:
    """(ranks that wrote the checkpoint ``where`` with trainer ``state``, gradient accumulation for this
    run): on another number of ranks, the accumulation that keeps the checkpoint's global batch
    (elastic resume); a --grad_accum the user ``typed`` that differs from it is refused."""
    saved_ranks, saved_batch = state["world_size"], state.get("global_batch")
    if saved_ranks == world_size or saved_batch is None:
        return saved_ranks, settings.grad_accum
    per_step = settings.per_device_batch_size * world_size
    if saved_batch % per_step:
        raise SinkTrainError(
            f"checkpoint {where} trained with a global batch of {saved_batch} on {saved_ranks} ranks; {world_size} "
            f"ranks x --per_device_batch_size {settings.per_device_batch_size} cannot make {saved_batch} with a whole "
            f"--grad_accum; resume on a number of ranks that divides {saved_batch // settings.per_device_batch_size}"
        )
    accum = saved_batch // per_step
    if typed and accum != settings.grad_accum:
        raise SinkTrainError(
            f"--grad_accum {settings.grad_accum}: checkpoint {where} trained with a global batch of {saved_batch} on "
            f"{saved_ranks} ranks; on {world_size} ranks that needs --grad_accum {accum} (or leave the flag out)"
        )
    logger.info("resuming %d ranks' checkpoint on %d: --grad_accum %d keeps its global batch of %d", saved_ranks, world_size, accum, saved_batch)
    return saved_ranks, accum


def check_resumable(state: dict, where: Path, global_batch: int, data: dict) -> None:
    saved_batch = state.get("global_batch", global_batch)
    if saved_batch != global_batch:
        raise SinkTrainError(
            f"checkpoint {where} trained with a global batch of {saved_batch} samples, this run's is {global_batch}; "
            "resume with the same global batch (per_device_batch_size x grad_accum x ranks): the data position "
            "and the learning-rate schedule are counted in its steps"
        )
    saved_data = state.get("data")
    if saved_data is not None and saved_data["digest"] != data["digest"]:
        raise SinkTrainError(
            f"checkpoint {where} was trained on --data {describe(saved_data)}, this run reads --data {describe(data)}; "
            "resume with the checkpoint's --data (or start a new --output_dir to train on other data)"
        )


def run_lanes(state: dict | None, data_lanes: int | None, world_size: int, num_workers: int) -> int:
    """The data lanes of the run's global order: a resumed run keeps its checkpoint's (trainer
    ``state``; fixed for the run's lifetime), a new one has --data_lanes or one per reader."""
    if state is not None:
        return state["stream"]["lanes"]
    return data_lanes or default_lanes(world_size, num_workers)
