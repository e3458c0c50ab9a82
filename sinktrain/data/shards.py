"""Writing WebDataset shards: the one code path for both the demo data and real LLaVA data.

A sample in a shard is the tar members sharing one key: <key>.json, the LLaVA record, and
<key>.<ext>, the image's original bytes (absent for text-only samples), or <key>.0.<ext>,
<key>.1.<ext>, ... for a multi-image sample; sinktrain.data.shard_format describes the format.

Real data goes through `tools/make_shards.py` (run it with --help), which reads it with
sinktrain.data.llava_json (its names are importable from here too); the demo data through
`write_demo_shards` (any of sinktrain.data.scenes' generators). Shards are written into a temporary directory and moved into place only
when the whole write succeeded, so an interrupted or failed run never leaves half a dataset.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from typing import Callable, Iterable, Iterator

import webdataset as wds

from sinktrain.data.llava_json import (
    IMAGE_TOKEN,
    BadRecord,
    ReadStats,
    check_conversations,
    llava_json_samples,
    load_llava_json,
    read_image,
    read_images,
)
from sinktrain.data.scenes import demo_samples
from sinktrain.data.shard_format import IMAGE_EXTENSIONS, Sample, image_field
from sinktrain.errors import SinkTrainError

__all__ = [
    "DEFAULT_MAX_BYTES_PER_SHARD",
    "IMAGE_EXTENSIONS",
    "IMAGE_TOKEN",
    "MEMBER_MTIME",
    "BadRecord",
    "ReadStats",
    "Sample",
    "check_conversations",
    "check_shard_pattern",
    "llava_json_samples",
    "load_llava_json",
    "read_image",
    "read_images",
    "shard_key",
    "write_demo_shards",
    "write_shards",
]

logger = logging.getLogger("sinktrain")

DEFAULT_MAX_BYTES_PER_SHARD = 1 << 30  # ~1 GiB: streams well and spreads evenly over workers
# Tar member time: fixed, so the same samples always give the same shard bytes (the demo shards
# are bitwise reproducible, and a reconverted dataset hashes as before).
MEMBER_MTIME = 0  # an int: a float mtime makes tarfile add a PAX header to every member (twice the headers to read)


# --- writing -------------------------------------------------------------------------------


def shard_key(record_id: object) -> str:
    """A WebDataset-safe key: WebDataset splits member names at the first '.', and '/' makes
    directories, so anything outside [A-Za-z0-9_-] becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(record_id)) or "_"


def check_shard_pattern(pattern: str) -> None:
    """Refuse a pattern that would write every shard to one file (or number directories)."""
    fix = "use a pattern with a %d-style shard number in the file name, e.g. 'shards/%06d.tar'"
    if "%" in os.path.dirname(pattern):
        raise SinkTrainError(f"shard pattern {pattern!r} numbers a directory; {fix}")
    try:
        distinct = (pattern % 0) != (pattern % 1)
    except (TypeError, ValueError):
        distinct = False
    if not distinct:
        raise SinkTrainError(f"shard pattern {pattern!r} has no usable % shard number; {fix}")


def _unique_keys(samples: Iterable[Sample]) -> Iterator[dict]:
    """Turn (record, image(s), ext(s)) triples into WebDataset dicts with keys unique in this write.

    Two ids that sanitize alike (or a dataset's duplicate ids) would otherwise merge into one
    sample when read back, so later ones get a numeric suffix.
    """
    used: set[str] = set()
    suffix: Counter[str] = Counter()
    for record, image, ext in samples:
        base = key = shard_key(record.get("id", ""))
        while key in used:
            suffix[base] += 1
            key = f"{base}_{suffix[base]}"
        used.add(key)
        sample = {"__key__": key, "json": json.dumps(record, ensure_ascii=False).encode("utf-8")}
        sample.update(_image_members(image, ext))
        yield sample


def _image_members(image, ext) -> dict[str, bytes]:
    """A sample's image fields: none, one plain "<ext>", or "0.<ext>", "1.<ext>", ... for several."""
    if image is None:
        return {}
    images, exts = ([image], [ext]) if isinstance(image, (bytes, bytearray)) else (list(image), ext)
    if not isinstance(exts, (list, tuple)) or len(exts) != len(images):
        raise SinkTrainError(
            f"{len(images)} images with extension(s) {ext!r}: pass a list of images with a list of "
            "as many extensions, in the order of the record's <image> markers"
        )
    members = [_member_extension(e) for e in exts]
    return {image_field(i, m, len(images)): data for i, (data, m) in enumerate(zip(images, members))}


def _member_extension(ext: str | None) -> str:
    member = (ext or "").lower().lstrip(".")
    if member not in IMAGE_EXTENSIONS:
        raise SinkTrainError(
            f"image extension {ext!r} is not one the reader looks for "
            f"({', '.join(IMAGE_EXTENSIONS)}); pass the image's real format as its extension"
        )
    return member


def _write_staged(samples, staging_pattern, max_samples_per_shard, max_bytes, start_shard):
    written: list[str] = []
    with wds.ShardWriter(
        staging_pattern,
        maxcount=max_samples_per_shard,
        maxsize=max_bytes,
        start_shard=start_shard,
        verbose=0,
        post=written.append,  # called with each shard's path once it is closed
        mtime=MEMBER_MTIME,
    ) as sink:
        for sample in _unique_keys(samples):
            sink.write(sample)
        count = sink.total
    return written, count


def write_shards(
    samples: Iterable[Sample],
    pattern: str,
    max_samples_per_shard: int = 1000,
    max_bytes_per_shard: int = DEFAULT_MAX_BYTES_PER_SHARD,
    start_shard: int = 0,
) -> list[str]:
    """Write (record, image_bytes | None, image_ext | None) triples as shards named by `pattern`.

    Several images go as a list of bytes with a list of extensions, in <image> order (stored
    as <key>.0.<ext>, <key>.1.<ext>, ...). Returns the shard paths. Shards appear only if every sample was written: an exception while
    iterating `samples` (e.g. a validation failure) leaves the destination untouched.
    """
    check_shard_pattern(pattern)
    if max_samples_per_shard < 1 or max_bytes_per_shard < 1:
        raise SinkTrainError(
            f"shard limits must be positive (got {max_samples_per_shard} samples, "
            f"{max_bytes_per_shard} bytes); pass a max_samples_per_shard of at least 1"
        )
    out_dir = os.path.dirname(pattern) or "."
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".shards-partial-", dir=out_dir)
    try:
        staged, count = _write_staged(
            samples,
            os.path.join(staging, os.path.basename(pattern)),
            max_samples_per_shard,
            max_bytes_per_shard,
            start_shard,
        )
        if count == 0:
            raise SinkTrainError(
                f"no samples to write to {pattern!r}: the input was empty or every record was "
                "skipped; check the input data (the log names each skipped record)"
            )
        paths = [os.path.join(out_dir, os.path.basename(path)) for path in staged]
        for src, dst in zip(staged, paths):
            os.replace(src, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _warn_stale(pattern, start_shard + len(paths))
    return paths


def _warn_stale(pattern: str, next_index: int) -> None:
    if os.path.exists(pattern % next_index):
        logger.warning(
            "%s is left over from an earlier, larger write and is not part of this dataset; "
            "delete shards from it onwards before training on a glob of %s",
            pattern % next_index,
            pattern,
        )


# --- demo data -----------------------------------------------------------------------------


def even_split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


DemoGenerator = Callable[[int, int], Iterator[tuple[dict, bytes | list[bytes] | None]]]


def _as_pngs(generated):
    """(record, PNG | list of PNGs | None) -> shard samples with png extension(s)."""
    for record, image in generated:
        ext = None if image is None else "png" if isinstance(image, bytes) else ["png"] * len(image)
        yield record, image, ext


def write_demo_shards(
    out_dir: str, num_samples: int, num_shards: int, seed: int, generate: DemoGenerator = demo_samples
) -> list[str]:
    """Write `num_samples` samples of `generate(num_samples, seed)` (default: the demo scenes) as
    exactly `num_shards` shards `out_dir/demo-%06d.tar`.

    The whole directory is built beside `out_dir` and swapped in with `os.replace`, so a cache
    check on `out_dir` never sees a half-built dataset. An existing `out_dir` is replaced.
    """
    if not 1 <= num_shards <= num_samples:
        raise SinkTrainError(
            f"cannot split {num_samples} demo samples over {num_shards} shards; "
            "ask for at least one shard and at least as many samples as shards"
        )
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    building = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}-building-", dir=parent)
    try:
        stream = _as_pngs(generate(num_samples, seed))
        pattern = os.path.join(building, "demo-%06d.tar")
        for index, size in enumerate(even_split(num_samples, num_shards)):
            write_shards(itertools.islice(stream, size), pattern, size, start_shard=index)
        _swap_in(building, out_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return [os.path.join(out_dir, f"demo-{index:06d}.tar") for index in range(num_shards)]


def _swap_in(new_dir: str, out_dir: str) -> None:
    # os.replace cannot overwrite a non-empty directory, so move the old one aside first.
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(
            prefix=f".{os.path.basename(out_dir)}-old-", dir=os.path.dirname(out_dir)
        )
        os.replace(out_dir, os.path.join(old, "data"))
    os.replace(new_dir, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
