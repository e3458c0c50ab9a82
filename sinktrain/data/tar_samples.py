"""Samples of one WebDataset tar shard, counted and read from any sample on, cheaply.

    count_samples(url)                   # samples in a shard (local: tar headers only, by seeking)
    read_samples(url, start, count)      # samples start .. start + count - 1, as WebDataset yields them
    samples_from(url, start)             # samples start .. the end, no placeholders (a broken shard raises)

A sample is the run of adjacent members sharing a key (WebDataset's grouping). Local shards are
walked header by header with seeks (``tar_members``: a tenth of ``tarfile``'s cost per member), so
counting and starting at sample ``k`` read no image bytes; remote shards (``pipe:``,
``http(s)://``, ...) are streamed through WebDataset's tar iterators and the first ``k`` samples
read and dropped.

A shard that breaks off early (truncated, corrupt) yields a ``{BROKEN: reason}`` placeholder for
each sample it lost, so the number of samples, and every later position, stays what the index
says; the stream counts placeholders as bad samples.
"""

from __future__ import annotations

import logging
import os
import tarfile
from dataclasses import dataclass
from typing import Iterator

from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

from sinktrain.data.tar_members import regular_members

logger = logging.getLogger("sinktrain")
BROKEN = "__broken__"  # key of a placeholder for a sample a broken shard lost


@dataclass
class ReadStats:
    """What one process read: samples whose bytes were read, and samples stepped over by seeking."""

    read: int = 0
    seeked: int = 0


def is_local(url: str) -> bool:
    return os.path.isfile(url)


def member_key(name: str) -> str | None:
    """The sample key WebDataset groups a member under (None: not part of any sample)."""
    return _key_and_extension(name)[0]


def _key_and_extension(name: str) -> tuple[str | None, str | None]:
    if name.startswith("__") or "/__" in name:  # WebDataset's metadata members
        return None, None
    return base_plus_ext(name)


def sample_starts(url: str, stop: int | None = None) -> list[int]:
    """Byte offsets of the first member of each sample of a local shard (the first ``stop`` of them)."""
    starts: list[int] = []
    previous = None
    with open(url, "rb") as stream:
        try:
            for name, offset, _ in regular_members(stream):
                key = member_key(name)
                if key is None or key == previous:
                    continue
                if stop is not None and len(starts) == stop:
                    break
                starts.append(offset)
                previous = key
        except tarfile.TarError as error:  # cut off or damaged midway: its samples so far count
            logger.warning("skipping unreadable shard data in %s after sample %d: %s", url, len(starts), error)
    return starts


def count_samples(url: str) -> int:
    """Samples in a shard; an unreadable one counts 0, with a warning naming it."""
    try:
        if is_local(url):
            return len(sample_starts(url))
        return sum(1 for _ in group_by_keys(tar_file_expander([{"url": url, "stream": gopen(url)}])))
    except (tarfile.TarError, OSError, ValueError) as error:
        logger.warning("skipping unreadable shard data in %s: %s", url, error)
        return 0


def read_samples(url: str, start: int, count: int, stats: ReadStats) -> Iterator[dict]:
    """Samples ``start .. start + count - 1`` of a shard; placeholders for those it cannot give."""
    given = 0
    try:
        for sample in samples_from(url, start, stats):
            if given == count:
                return
            stats.read += 1
            given += 1
            yield sample
        reason = "the shard ended early"
    except (tarfile.TarError, OSError, ValueError) as error:
        reason = str(error.args[0]) if error.args else repr(error)  # WebDataset appends the stream to args
    if given < count:
        logger.warning("skipping unreadable shard data in %s: %s (%d samples lost)", url, reason, count - given)
    for _ in range(count - given):
        yield {BROKEN: reason, "__url__": url, "__key__": None}


def samples_from(url: str, start: int, stats: ReadStats) -> Iterator[dict]:
    """A shard's samples from sample ``start`` to its end, as WebDataset yields them (a broken shard raises)."""
    if is_local(url):
        yield from _local_samples_from(url, start, stats)
        return
    with gopen(url) as stream:
        samples = group_by_keys(tar_file_expander([{"url": url, "stream": stream}], eof_value=None))
        for index, sample in enumerate(samples):
            if index < start:  # remote: read and dropped, still bytes over the wire
                stats.read += 1
                continue
            yield sample


def _local_samples_from(url: str, start: int, stats: ReadStats) -> Iterator[dict]:
    """WebDataset's grouping (adjacent members sharing a key, lower-case extensions) over our own header walk."""
    starts = sample_starts(url, stop=start + 1) if start else [0]
    if len(starts) <= start:
        return
    stats.seeked += start
    sample: dict | None = None
    with open(url, "rb") as stream:
        stream.seek(starts[start])
        for name, _, read in regular_members(stream):
            key, extension = _key_and_extension(name)
            if key is None:
                continue
            if sample is None or key != sample["__key__"]:
                if sample is not None:
                    yield sample
                sample = {"__key__": key, "__url__": url}
            extension = extension.lower()
            if extension in sample:
                raise ValueError(f"{name}: duplicate file name in tar file {url}")
            sample[extension] = read()
    if sample is not None:
        yield sample
