"""The shard sample format shared by the shard writer, the LLaVA JSON reader and the sample decoder.

A sample in a shard is the tar members sharing one key:

    <key>.json       the LLaVA record (utf-8 JSON): id, optional image(s), conversations, ...
    <key>.<ext>      a single image's original bytes under its lowercased extension (jpg, png,
                     webp, ...); absent for text-only samples
    <key>.<i>.<ext>  the images of a multi-image sample (LLaVA-OneVision), i = 0, 1, 2, ... in the
                     order of the conversation's <image> markers; WebDataset splits a member name
                     at its first '.', so these are the sample's fields "0.png", "1.jpg", ...

Image bytes are stored as-is, never re-encoded. A sample holds either one plain <key>.<ext> or
indexed members 0..n-1 without a gap, never both (the decoder skips anything else as a bad
sample). The writer stores one image plain, even when given as a list of one, so single-image
data keeps its layout and every single-image reader works unchanged.
"""

from __future__ import annotations

import re

# Member extensions an image may be stored under; the reader looks for exactly these.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
# A multi-image sample's field: "<index>.<ext>" (the reader also checks ext is in IMAGE_EXTENSIONS).
INDEXED_IMAGE_FIELD = re.compile(r"(\d+)\.([a-z]+)")
# (record, image bytes, image extension): one image as bytes + str, several as equal-length lists
# of bytes and str (in <image> order), None + None for a text-only sample.
Sample = tuple[dict, bytes | list[bytes] | None, str | list[str] | None]


def image_field(index: int, ext: str, count: int) -> str:
    """The WebDataset field of image `index` of `count`: "png" alone, "0.png", "1.jpg" ... for several."""
    return ext if count == 1 else f"{index}.{ext}"
