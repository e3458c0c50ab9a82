"""Streaming WebDataset shards to every rank and worker, with equal work and exact resume.

Each (rank, worker) pair is one *reader*; reader ``u`` of ``U = world_size * num_workers`` owns
shards ``u, u + U, u + 2U, ...`` (split by node and by worker in one step) and walks them
forever, epoch after epoch, each epoch in its own seeded shard order through a seeded shuffle
buffer. Because every reader's stream is endless, every rank takes exactly the steps the loop
asks for, whatever the shard sizes (what ``resampled=True`` + ``with_epoch`` buys elsewhere).

Every sample carries ``(reader, index)``: the training loop records, per reader, how many raw
samples were consumed, and a resumed stream replays the same deterministic order and skips that
many without decoding them. A per-sample function may turn one raw sample into several examples
(a list; LSG's one example per turn): each carries ``(part, parts)`` too, and a checkpoint taken
between two of them resumes with the next. Broken samples are skipped, logged with shard and key,
and counted.
"""

from __future__ import annotations

import glob
import os
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import braceexpand
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

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


def check_enough_shards(num_shards: int, world_size: int, num_workers: int) -> None:
    readers = world_size * max(num_workers, 1)
    if num_shards < readers:
        raise SinkTrainError(
            f"{num_shards} shards for {world_size} ranks x {max(num_workers, 1)} data workers = {readers} readers: "
            f"every reader needs at least one shard. Write at least {readers} shards (tools/make_shards.py "
            f"--max_samples_per_shard smaller), or lower --num_workers, or use fewer ranks"
        )


class BadSample(Exception):
    """A sample that cannot be decoded or tokenized; the stream skips and counts it."""


@dataclass
class ReaderState:
    """What a reader has consumed so far: raw samples, how many of those were bad, and how many
    examples of the next raw sample were used already (a sample split into several examples, e.g.
    LSG's one example per turn, can be cut by a checkpoint)."""

    consumed: int = 0
    bad: int = 0
    parts_done: int = 0


@dataclass
class StreamState:
    """Resume point of the whole stream: one ReaderState per reader."""

    readers: int
    states: dict[int, ReaderState] = field(default_factory=dict)

    def update(self, reader: int, index: int, bad: int, part: int = 0, parts: int = 1) -> None:
        """Example ``part`` of ``parts`` made from raw sample ``index`` was used."""
        self.advance(reader, (index + 1, 0) if part + 1 >= parts else (index, part + 1), bad)

    def advance(self, reader: int, position: tuple[int, int], bad: int) -> None:
        """Move ``reader`` to ``position`` = (raw samples consumed, examples of the next one used), never back."""
        state = self.states.setdefault(reader, ReaderState())
        if position > (state.consumed, state.parts_done):
            state.consumed, state.parts_done = position
            state.bad = bad

    def merge(self, other: "StreamState") -> None:
        for reader, state in other.states.items():
            self.advance(reader, (state.consumed, state.parts_done), state.bad)

    def totals(self) -> tuple[int, int]:
        return sum(s.consumed for s in self.states.values()), sum(s.bad for s in self.states.values())

    def to_dict(self) -> dict[str, Any]:
        return {"readers": self.readers, "states": {str(k): vars(v) for k, v in self.states.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StreamState":
        return cls(data["readers"], {int(k): ReaderState(**v) for k, v in data["states"].items()})


def shuffled(samples: Iterator[dict], buffer_size: int, rng: random.Random) -> Iterator[dict]:
    """A seeded shuffle buffer: the same rng gives the same order, which exact resume relies on."""
    buffer_size = max(buffer_size, 1)  # --shuffle_buffer 0: no shuffling within shards
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        slot = rng.randrange(buffer_size)
        yield buffer[slot]
        buffer[slot] = sample
    rng.shuffle(buffer)
    yield from buffer


MAX_BAD_IN_A_ROW = 1000  # a reader that finds nothing usable must fail, not spin forever


def check_not_all_bad(reader: int, bad_in_a_row: int, url: str | None) -> None:
    if bad_in_a_row >= MAX_BAD_IN_A_ROW:
        raise SinkTrainError(
            f"data reader {reader}: the last {bad_in_a_row} samples were all unusable (latest in {url}); its "
            "shards are broken or do not fit the model/template: fix or regenerate them (tools/make_shards.py)"
        )


class ShardStream(IterableDataset):
    """Endless, deterministic, resumable per-reader streams of decoded samples."""

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
    ):
        self.shards, self.decode = shards, decode
        self.rank, self.world_size, self.num_workers = rank, world_size, max(num_workers, 1)
        self.readers = world_size * self.num_workers
        check_enough_shards(len(shards), world_size, num_workers)
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        if resume is not None and resume.readers != self.readers:
            raise SinkTrainError(
                f"the checkpoint's data position is for {resume.readers} readers (ranks x workers) but this run has "
                f"{self.readers}; resume with the same number of ranks and --num_workers"
            )
        self.resume = resume or StreamState(self.readers)

    def reader_index(self) -> int:
        worker = get_worker_info()
        return self.rank * self.num_workers + (worker.id if worker else 0)

    def raw_samples(self, reader: int) -> Iterator[dict]:
        own = self.shards[reader :: self.readers]
        epoch = 0
        while True:
            order = list(own)
            random.Random(f"{self.seed}-{reader}-{epoch}").shuffle(order)
            # Our readers already split by node and worker, so WebDataset must not split again.
            tars = wds.WebDataset(
                order, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False,
                handler=self._broken_tar,
            )
            rng = random.Random(f"{self.seed}-{reader}-{epoch}-buffer")
            read = 0
            for sample in shuffled(iter(tars), self.shuffle_buffer, rng):
                read += 1
                yield sample
            if not read:  # an endless loop over nothing would hang this rank (and so the whole job)
                raise SinkTrainError(
                    f"data reader {reader} read no sample from its shards ({', '.join(own)}): they are empty or "
                    "unreadable (the log above names the errors); regenerate them (tools/make_shards.py) "
                    "or leave them out of --data"
                )
            epoch += 1

    def _broken_tar(self, error: Exception) -> bool:
        """WebDataset handler for unreadable tar data: log, count, go on with the next member."""
        logger.warning("skipping unreadable shard data: %s", error)
        self._broken += 1
        return True

    def __iter__(self) -> Iterator[dict]:
        reader = self.reader_index()
        state = self.resume.states.get(reader, ReaderState())
        bad, self._broken, bad_in_a_row = state.bad, 0, 0
        for index, raw in enumerate(self.raw_samples(reader)):
            if index < state.consumed:
                self._broken = 0  # broken data before the resume point was counted already
                continue  # replayed, not decoded: resume skips what the checkpoint consumed
            bad, self._broken = bad + self._broken, 0
            try:
                sample = self.decode(raw)
            except BadSample as err:
                bad, bad_in_a_row = bad + 1, bad_in_a_row + 1
                logger.warning("skipping bad sample %s in %s: %s", raw.get("__key__"), raw.get("__url__"), err)
                check_not_all_bad(reader, bad_in_a_row, raw.get("__url__"))
                continue
            bad_in_a_row = 0
            examples = sample if isinstance(sample, list) else [sample]
            first = state.parts_done if index == state.consumed else 0  # the rest of a sample a checkpoint cut
            for part in range(first, len(examples)):
                yield dict(examples[part], reader=reader, index=index, bad=bad, part=part, parts=len(examples))
