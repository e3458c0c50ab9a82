"""Reading LLaVA-format JSON + an image folder as shard samples, skipping and counting bad records.

A record's "image" is one path, or a list of paths (LLaVA-OneVision's multi-image data) whose
conversation holds one <image> marker per image, in the same order. `tools/make_shards.py`
feeds `llava_json_samples` into `sinktrain.data.shards.write_shards`.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from PIL import Image

from sinktrain.data.shard_format import IMAGE_EXTENSIONS, Sample
from sinktrain.errors import SinkTrainError

logger = logging.getLogger("sinktrain")

IMAGE_TOKEN = "<image>"
# For files whose suffix is not in IMAGE_EXTENSIONS ('.jfif', none): PIL's format -> extension.
# MPO is the multi-picture JPEG some cameras write; JPEG decoders read its first picture.
_PIL_FORMAT_EXTENSIONS = {
    "JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif",
    "TIFF": "tiff",
}


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


def check_conversations(record: dict, images: int) -> list[dict]:
    """Validated conversations for a record with `images` images (a bool reads as 0 or 1), with
    LLaVA's single-image '<image>' fix-up applied; raises BadRecord."""
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
    return _fix_image_token(turns, int(images))


def _fix_image_token(turns: list[dict], images: int) -> list[dict]:
    in_human = sum(t["value"].count(IMAGE_TOKEN) for t in turns[0::2])
    in_gpt = sum(t["value"].count(IMAGE_TOKEN) for t in turns[1::2])
    if in_gpt:
        raise BadRecord("invalid record", f"{IMAGE_TOKEN} in a gpt turn")
    if not images and in_human:
        raise BadRecord("invalid record", f"{IMAGE_TOKEN} in the text but no image")
    if images == 1 and in_human > 1:
        raise BadRecord("invalid record", f"{in_human} {IMAGE_TOKEN} tokens for one image")
    if images > 1 and in_human != images:
        # No guessing where several images go: the markers place them in the text.
        raise BadRecord(
            "invalid record", f"{in_human} {IMAGE_TOKEN} tokens for {images} images (one per image, in order)"
        )
    if images == 1 and not in_human:
        # LLaVA's own loader puts the image before the first question when the text omits it.
        first = dict(turns[0], value=IMAGE_TOKEN + "\n" + turns[0]["value"])
        return [first] + turns[1:]
    return turns


def read_image(image_folder: str, relative: object) -> tuple[bytes, str]:
    """The raw bytes and lowercased extension of one image; raises BadRecord."""
    if not isinstance(relative, str) or not relative:
        raise BadRecord("invalid record", f"image {relative!r} is not a file path")
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


def read_images(image_folder: str, image: object) -> tuple[bytes | list[bytes] | None, str | list[str] | None]:
    """A record's "image": None, one path (bytes, ext) or a list of paths (lists); raises BadRecord."""
    if image is None:
        return None, None
    if not isinstance(image, list):
        return read_image(image_folder, image)
    if not image:
        raise BadRecord("invalid record", "'image' is an empty list; leave 'image' out for a text-only record")
    pairs = [read_image(image_folder, path) for path in image]
    return [data for data, _ in pairs], [ext for _, ext in pairs]


def _prepare(record: object, image_folder: str) -> Sample:
    if not isinstance(record, dict):
        raise BadRecord("invalid record", "not a JSON object")
    image, ext = read_images(image_folder, record.get("image"))
    count = 0 if image is None else len(image) if isinstance(image, list) else 1
    conversations = check_conversations(record, count)
    return dict(record, conversations=conversations), image, ext


def llava_json_samples(
    json_path: str, image_folder: str, stats: ReadStats | None = None, choose: Callable[[list], list] | None = None
) -> Iterator[Sample]:
    """(record, image bytes | None, extension | None) for every usable record of a LLaVA JSON
    (lists of bytes and extensions for a record with a list of images); ``choose`` picks the
    records to convert first (e.g. a category-balanced draw), before any image is read.

    The file is loaded (and a missing/unparseable file reported) when this is called; bad
    records are skipped, logged and counted in `stats` as the iterator is consumed.
    """
    records = load_llava_json(json_path)
    if choose is not None:
        records = choose(records)
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
