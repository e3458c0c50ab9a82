"""The global sample order: one sequence for the whole job, whatever its ranks and data workers.

Every epoch, the shards are put in a seeded order and their samples laid end to end (N samples);
that line is cut into ``lanes`` equal stretches (sizes differ by at most one), and each lane reads
its stretch window by window, each window of ``window`` samples in a seeded order of its own.
So every sample is read once per epoch whatever the shard sizes, a lane's position is one number
(raw samples read since the start, across epochs), and the position of any sample is computed,
never replayed: resuming re-reads at most one window per lane.

    order = DataOrder(sizes=(120, 3, 880), lanes=8, window=1000, seed=0)
    for index, raw in lane_samples(order, urls, lane=3, start=412, stats=ReadStats()):
        ...   # lane 3's raw samples from its 412th on, with their lane index

Micro-batches are cut from lanes (sinktrain.data.stream): micro-batch ``g`` of the job is the next
one of lane ``g % lanes``, which is what makes the order independent of ranks and workers.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from typing import Iterator

from sinktrain.data.tar_samples import ReadStats, read_samples
from sinktrain.errors import SinkTrainError


def default_lanes(world_size: int, num_workers: int) -> int:
    """--data_lanes when not given: one per reader (ranks x data workers; no workers: the rank reads)."""
    return world_size * max(num_workers, 1)


def check_lanes(samples: int, lanes: int) -> None:
    """Every lane needs a sample of its own."""
    if samples < lanes:
        raise SinkTrainError(
            f"the shards hold {samples} readable samples, fewer than the {lanes} data lanes; "
            "give more data, or fewer lanes (--data_lanes; default: ranks x --num_workers)"
        )


@dataclass(frozen=True)
class DataOrder:
    sizes: tuple[int, ...]  # samples per shard, in --data order
    lanes: int
    window: int  # shuffle window in samples; 0 or 1: no shuffling at all (shards in --data order)
    seed: int

    def __post_init__(self):
        check_lanes(self.total, self.lanes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def shuffles(self) -> bool:
        return self.window > 1

    def lane_range(self, lane: int) -> tuple[int, int]:
        """Lane ``lane``'s stretch [start, stop) of an epoch's samples laid end to end."""
        return lane * self.total // self.lanes, (lane + 1) * self.total // self.lanes

    def lane_length(self, lane: int) -> int:
        start, stop = self.lane_range(lane)
        return stop - start

    def shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.sizes)))
        if self.shuffles:
            random.Random(f"{self.seed}-shards-{epoch}").shuffle(order)
        return order

    def window_order(self, epoch: int, lane: int, window: int, length: int) -> list[int]:
        order = list(range(length))
        if self.shuffles:
            random.Random(f"{self.seed}-window-{epoch}-{lane}-{window}").shuffle(order)
        return order


def epoch_samples(order: DataOrder, urls: list[str], epoch: int, position: int, stats: ReadStats) -> Iterator[dict]:
    """The epoch's samples laid end to end, from ``position`` on (opening each shard once)."""
    shards = order.shard_order(epoch)
    ends = list(itertools.accumulate(order.sizes[shard] for shard in shards))
    first = bisect.bisect_right(ends, position)
    for rank_in_order in range(first, len(shards)):
        shard = shards[rank_in_order]
        start = position - (ends[rank_in_order] - order.sizes[shard]) if rank_in_order == first else 0
        yield from read_samples(urls[shard], start, order.sizes[shard] - start, stats)


def lane_samples(order: DataOrder, urls: list[str], lane: int, start: int, stats: ReadStats) -> Iterator[tuple[int, dict]]:
    """(lane index, raw sample) of lane ``lane`` from lane index ``start`` on, endlessly."""
    length, size = order.lane_length(lane), max(order.window, 1)
    epoch, position = divmod(start, length)
    while True:
        lane_start, _ = order.lane_range(lane)
        window = position // size
        samples = epoch_samples(order, urls, epoch, lane_start + window * size, stats)
        skip = position - window * size  # read again, not handed out: they were consumed before
        for first in range(window * size, length, size):
            count = min(size, length - first)
            raws = list(itertools.islice(samples, count))
            for offset, pick in enumerate(order.window_order(epoch, lane, first // size, count)):
                if offset >= skip:
                    yield epoch * length + first + offset, raws[pick]
            skip = 0
        samples.close()
        epoch, position = epoch + 1, 0
