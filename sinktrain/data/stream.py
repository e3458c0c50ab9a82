"""Streaming WebDataset shards to every rank and worker in one global order, with exact, cheap and
elastic resume.

The order is the job's, not a reader's (sinktrain.data.order): lanes cut every epoch's samples
into equal stretches, and the job's micro-batch ``g`` is the next ``micro_batch`` examples of lane
``g % lanes``. Rank ``r`` of ``W`` consumes micro-batches ``g = k * W + r`` (k = 0, 1, ... since the
start), and PyTorch's DataLoader hands a rank's k-th micro-batch to worker ``k % num_workers`` (it
collects workers' batches round-robin, in order); so each worker computes which micro-batches are
its own and reads only their lanes. Nothing depends on timing, on the number of workers, or (for
the sequence of micro-batches) on the number of ranks: a run resumes exactly on any of them.

When ranks x workers divides the number of lanes, every lane has one reader; otherwise readers
that share a lane each decode it and keep their own micro-batches (correct, but more work: a
warning says so). Every example carries (lane, index, bad, part, parts), the training loop
records them in a StreamState, and a resumed stream starts each lane where it stood. Broken
samples are skipped, logged with shard and key, and counted.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
from typing import Any, Callable, Iterator

import braceexpand
from torch.utils.data import IterableDataset, get_worker_info

from sinktrain.allocator import keep_freed_memory
from sinktrain.data.order import DataOrder, default_lanes, lane_samples
from sinktrain.data.shard_index import shard_sizes
from sinktrain.data.stream_state import StreamState
from sinktrain.data.tar_samples import BROKEN, ReadStats
from sinktrain.errors import SinkTrainError

logger = logging.getLogger("sinktrain")

REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "ais://", "hf://")


def expand_shards(spec: str) -> list[str]:
    """``'shards/{000000..000099}.tar'`` (brace expansion; local globs; ``::``-joined lists)."""
    urls: list[str] = []
    for part in spec.split("::"):
        for url in braceexpand.braceexpand(part):
            if url.startswith(REMOTE_PREFIXES):
                urls.append(url)
            else:
                urls.extend(sorted(glob.glob(url)) if glob.has_magic(url) else [url])
    missing = [url for url in urls if not url.startswith(REMOTE_PREFIXES) and not os.path.isfile(url)]
    if not urls or len(missing) == len(urls):
        raise SinkTrainError(
            f"--data {spec!r} matches no shard; give existing .tar files, e.g. "
            "'shards/{000000..000099}.tar' (write them with tools/make_shards.py)"
        )
    if missing:
        raise SinkTrainError(
            f"--data {spec!r}: {len(missing)} of {len(urls)} shards do not exist (first: {missing[0]}); "
            "fix the brace range or regenerate the shards"
        )
    return urls


class BadSample(Exception):
    """A sample that cannot be decoded or tokenized; the stream skips and counts it."""


MAX_BAD_IN_A_ROW = 1000  # a lane that finds nothing usable must fail, not spin forever


def check_not_all_bad(lane: int, bad_in_a_row: int, url: str | None) -> None:
    if bad_in_a_row >= MAX_BAD_IN_A_ROW:
        raise SinkTrainError(
            f"data lane {lane}: the last {bad_in_a_row} samples were all unusable (latest in {url}); its "
            "shards are broken or do not fit the model/template: fix or regenerate them (tools/make_shards.py)"
        )


class LaneReader:
    """One lane's examples, in order, from its resume position; hands out its micro-batches."""

    def __init__(self, stream: "ShardStream", lane: int, next_micro_batch: int):
        self.stream, self.lane, self.next_micro_batch = stream, lane, next_micro_batch
        self.examples = self._examples(stream.resume.lane(lane))

    def micro_batch(self, index: int) -> Iterator[dict]:
        """The lane's micro-batch ``index`` (those before it that another reader owns are decoded and dropped)."""
        size = self.stream.micro_batch
        for _ in range(index - self.next_micro_batch):
            for _ in itertools.islice(self.examples, size):
                pass
        self.next_micro_batch = index + 1
        return itertools.islice(self.examples, size)

    def _examples(self, state) -> Iterator[dict]:
        stream, lane = self.stream, self.lane
        bad, bad_in_a_row = state.bad, 0
        for index, raw in lane_samples(stream.order, stream.shards, lane, state.consumed, stream.stats):
            try:
                if BROKEN in raw:
                    raise BadSample(f"unreadable shard data: {raw[BROKEN]}")
                sample = stream.decode(raw)
            except BadSample as err:
                bad, bad_in_a_row = bad + 1, bad_in_a_row + 1
                if BROKEN not in raw:  # a broken shard was logged once when it broke off
                    logger.warning("skipping bad sample %s in %s: %s", raw.get("__key__"), raw.get("__url__"), err)
                check_not_all_bad(lane, bad_in_a_row, raw.get("__url__"))
                continue
            bad_in_a_row = 0
            examples = sample if isinstance(sample, list) else [sample]
            first = state.parts_done if index == state.consumed else 0  # the rest of a sample a checkpoint cut
            for part in range(first, len(examples)):
                yield dict(examples[part], lane=lane, index=index, bad=bad, part=part, parts=len(examples))


class ShardStream(IterableDataset):
    """This rank's micro-batches of the job's global order, as a stream of examples (batch them
    with ``DataLoader(stream, batch_size=micro_batch, num_workers=num_workers)``)."""

    def __init__(
        self,
        shards: list[str],
        decode: Callable[[dict], dict | list[dict]],
        rank: int,
        world_size: int,
        num_workers: int,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        resume: StreamState | None = None,
        *,
        micro_batch: int = 1,
        lanes: int | None = None,
        sizes: list[int] | None = None,
    ):
        self.shards, self.decode, self.micro_batch = shards, decode, micro_batch
        self.rank, self.world_size, self.num_workers = rank, world_size, max(num_workers, 1)
        self.resume = resume or StreamState(lanes or default_lanes(world_size, num_workers), micro_batch)
        check_resume(self.resume, micro_batch, world_size, lanes)
        self.lanes = self.resume.lanes
        sizes = shard_sizes(shards) if sizes is None else sizes
        self.order = DataOrder(tuple(sizes), self.lanes, shuffle_buffer, seed)
        self.stats = ReadStats()
        readers = world_size * self.num_workers
        if self.lanes % readers:
            logger.warning(
                "%d data lanes for %d readers (ranks x workers): readers share lanes and decode each other's "
                "samples; for the least work make ranks x --num_workers divide %d", self.lanes, readers, self.lanes,
            )

    def first_lane_batch(self, lane: int) -> int:
        """How many of the lane's micro-batches the job consumed before this stream started."""
        return max(0, -(-(self.resume.micro_batches - lane) // self.lanes))

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        if worker is not None:  # a DataLoader worker, ours alone: its shuffle windows' frees must not page-fault
            keep_freed_memory()
        first_local = self.resume.micro_batches // self.world_size
        readers: dict[int, LaneReader] = {}
        for k in itertools.count(worker.id if worker else 0, self.num_workers):
            job_batch = (first_local + k) * self.world_size + self.rank
            lane = job_batch % self.lanes
            if lane not in readers:
                readers[lane] = LaneReader(self, lane, self.first_lane_batch(lane))
            yield from readers[lane].micro_batch(job_batch // self.lanes)


def check_resume(resume: StreamState, micro_batch: int, world_size: int, lanes: int | None) -> None:
    if lanes is not None and lanes != resume.lanes:
        raise SinkTrainError(
            f"--data_lanes {lanes}: the checkpoint's global order has {resume.lanes} lanes, fixed for the run's "
            f"lifetime; resume with --data_lanes {resume.lanes} or without the flag"
        )
    if resume.micro_batch != micro_batch:
        raise SinkTrainError(
            f"the checkpoint's data order is cut in micro-batches of {resume.micro_batch} samples, this run's are "
            f"{micro_batch}; resume with --per_device_batch_size {resume.micro_batch} (change --grad_accum to "
            "keep the global batch on another number of ranks)"
        )
    if resume.micro_batches % world_size:
        raise SinkTrainError(
            f"the checkpoint consumed {resume.micro_batches} micro-batches, which {world_size} ranks cannot "
            "share evenly; resume with ranks x --grad_accum equal to the checkpoint's"
        )


def stream_positions(samples: list[dict[str, Any]]) -> list[tuple[int, int, int, int, int]]:
    """What the training loop records of a micro-batch: (lane, index, bad, part, parts) per example."""
    return [(s["lane"], s["index"], s["bad"], s.get("part", 0), s.get("parts", 1)) for s in samples]
