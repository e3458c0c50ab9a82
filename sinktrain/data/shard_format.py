"""The shard sample format shared by the shard writer and the LLaVA JSON reader.

A sample in a shard is three tar members sharing one key:

    <key>.json   the LLaVA record (utf-8 JSON): id, optional image, conversations, ...
    <key>.<ext>  the image's original bytes under its lowercased extension (jpg, png, webp, ...);
                 absent for text-only samples. Bytes are stored as-is, never re-encoded.
"""

from __future__ import annotations

# Member extensions an image may be stored under; the reader looks for exactly these.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
Sample = tuple[dict, bytes | None, str | None]  # (record, image bytes, image extension)
