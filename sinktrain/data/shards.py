"""Writing WebDataset shards: the one code path for both the demo data and real LLaVA data.

A sample in a shard is three tar members sharing one key:

    <key>.json   the LLaVA record (utf-8 JSON): id, optional image, conversations, ...
    <key>.<ext>  the image's original bytes under its lowercased extension (jpg, png, webp, ...);
                 absent for text-only samples. Bytes are stored as-is, never re-encoded.

Real data goes through `tools/make_shards.py` (run it with --help); the demo data through
`write_demo_shards`. Shards are written into a temporary directory and moved into place only
when the whole write succeeded, so an interrupted or failed run never leaves half a dataset.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import webdataset as wds
from PIL import Image

from sinktrain.data.scenes import demo_samples
from sinktrain.errors import SinkTrainError

logger = logging.getLogger("sinktrain")

IMAGE_TOKEN = "<image>"
# Member extensions an image may be stored under; the reader looks for exactly these.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
# For files whose suffix is not in IMAGE_EXTENSIONS ('.jfif', none): PIL's format -> extension.
# MPO is the multi-picture JPEG some cameras write; JPEG decoders read its first picture.
_PIL_FORMAT_EXTENSIONS = {
    "JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif",
    "TIFF": "tiff",
}
DEFAULT_MAX_BYTES_PER_SHARD = 1 << 30  # ~1 GiB: streams well and spreads evenly over workers
# Tar member time: fixed, so the same samples always give the same shard bytes (the demo shards
# are bitwise reproducible, and a reconverted dataset hashes as before).
MEMBER_MTIME = 0.0
Sample = tuple[dict, bytes | None, str | None]  # (record, image bytes, image extension)


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
    """Turn (record, bytes, ext) triples into WebDataset dicts with keys unique in this write.

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
        if image is not None:
            sample[_member_extension(ext)] = image
        yield sample


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

    Returns the shard paths. Shards appear only if every sample was written: an exception while
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


def _even_split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


def write_demo_shards(out_dir: str, num_samples: int, num_shards: int, seed: int) -> list[str]:
    """Write `num_samples` demo scenes as exactly `num_shards` shards `out_dir/demo-%06d.tar`.

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
        stream = (
            (record, png, None if png is None else "png")
            for record, png in demo_samples(num_samples, seed)
        )
        pattern = os.path.join(building, "demo-%06d.tar")
        for index, size in enumerate(_even_split(num_samples, num_shards)):
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


# --- reading LLaVA-format JSON -------------------------------------------------------------


@dataclass
class ReadStats:
    """What `llava_json_samples` kept and skipped; filled in while the samples are consumed."""

    total: int = 0  # records in the JSON file
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict = field(default_factory=dict)  # reason -> first few skipped ids

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, record_id: object, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < 5:
            ids.append(str(record_id))
        logger.warning("skipping record %s: %s (%s)", record_id, reason, detail)


class BadRecord(ValueError):
    """A record that cannot be trained on; `reason` is a short category for the summary."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def load_llava_json(json_path: str) -> list:
    if not os.path.isfile(json_path):
        raise SinkTrainError(
            f"LLaVA JSON {json_path!r} not found; pass the path of a LLaVA-format JSON list "
            "(e.g. llava_v1_5_mix665k.json)"
        )
    try:
        with open(json_path, encoding="utf-8") as f:
            records = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SinkTrainError(
            f"cannot parse {json_path!r} as JSON ({error}); re-download or repair the file"
        ) from None
    if not isinstance(records, list):
        raise SinkTrainError(
            f"{json_path!r} holds a JSON {type(records).__name__}, not a list of records; "
            "LLaVA-format data is a list of {{id, image, conversations}} objects"
        )
    return records


def check_conversations(record: dict, has_image: bool) -> list[dict]:
    """Validated conversations, with LLaVA's '<image>' fix-up applied; raises BadRecord."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise BadRecord("invalid record", "no conversations")
    for i, turn in enumerate(turns):
        expected = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected:
            raise BadRecord("invalid record", f"turn {i} is not from {expected!r}")
        if not isinstance(turn.get("value"), str):
            raise BadRecord("invalid record", f"turn {i} has no text value")
    if len(turns) % 2:
        raise BadRecord("invalid record", "last human turn has no gpt answer")
    return _fix_image_token(turns, has_image)


def _fix_image_token(turns: list[dict], has_image: bool) -> list[dict]:
    in_human = sum(t["value"].count(IMAGE_TOKEN) for t in turns[0::2])
    in_gpt = sum(t["value"].count(IMAGE_TOKEN) for t in turns[1::2])
    if in_gpt:
        raise BadRecord("invalid record", f"{IMAGE_TOKEN} in a gpt turn")
    if not has_image and in_human:
        raise BadRecord("invalid record", f"{IMAGE_TOKEN} in the text but no image")
    if has_image and in_human > 1:
        raise BadRecord("invalid record", f"{in_human} {IMAGE_TOKEN} tokens for one image")
    if has_image and not in_human:
        # LLaVA's own loader puts the image before the first question when the text omits it.
        first = dict(turns[0], value=IMAGE_TOKEN + "\n" + turns[0]["value"])
        return [first] + turns[1:]
    return turns


def read_image(image_folder: str, relative: object) -> tuple[bytes, str]:
    """The raw bytes and lowercased extension of one image; raises BadRecord."""
    if not isinstance(relative, str) or not relative:
        raise BadRecord("invalid record", "image is not a single file path (multi-image?)")
    path = os.path.join(image_folder, relative)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise BadRecord("missing image", f"{path}: {error.strerror}") from None
    try:
        image_format = Image.open(io.BytesIO(data)).format  # header only: cheap
    except Exception as error:  # PIL raises several types for undecodable data
        raise BadRecord("unreadable image", f"{path}: {error}") from None
    ext = os.path.splitext(relative)[1].lower().lstrip(".")
    if ext not in IMAGE_EXTENSIONS:  # e.g. '.jfif' or no suffix: name it by its real format
        ext = _PIL_FORMAT_EXTENSIONS.get(image_format, "")
    if not ext:
        raise BadRecord("unsupported image type", f"{path}: {image_format} image")
    return data, ext


def _prepare(record: object, image_folder: str) -> Sample:
    if not isinstance(record, dict):
        raise BadRecord("invalid record", "not a JSON object")
    image, ext = None, None
    if record.get("image") is not None:
        image, ext = read_image(image_folder, record["image"])
    conversations = check_conversations(record, image is not None)
    return dict(record, conversations=conversations), image, ext


def llava_json_samples(
    json_path: str, image_folder: str, stats: ReadStats | None = None
) -> Iterator[Sample]:
    """(record, image bytes | None, extension | None) for every usable record of a LLaVA JSON.

    The file is loaded (and a missing/unparseable file reported) when this is called; bad
    records are skipped, logged and counted in `stats` as the iterator is consumed.
    """
    records = load_llava_json(json_path)
    if not os.path.isdir(image_folder):
        raise SinkTrainError(
            f"image folder {image_folder!r} does not exist; pass the folder the records' "
            "'image' paths are relative to"
        )
    stats = stats if stats is not None else ReadStats()
    stats.total = len(records)
    return _iter_records(records, image_folder, stats)


def _iter_records(records: list, image_folder: str, stats: ReadStats) -> Iterator[Sample]:
    for index, record in enumerate(records):
        record_id = record.get("id", f"#{index}") if isinstance(record, dict) else f"#{index}"
        try:
            sample = _prepare(record, image_folder)
        except BadRecord as bad:
            stats.skip(record_id, bad.reason, bad.detail)
            continue
        stats.kept += 1
        yield sample
