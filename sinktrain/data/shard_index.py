"""How many samples each shard holds: the index the global order is computed from.

    sizes = shard_sizes(urls, cache=Path("runs/x/data_index.json"))

Local shards are counted from their tar headers (seeks, no image bytes); remote ones are read
once. A cache file keeps the counts: local entries are reused while the file's size and mtime are
unchanged, remote ones as long as the URL is the same, so a resumed or requeued run does not
count again. The cache is written atomically (a crash leaves the old one or none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sinktrain.data.tar_samples import count_samples, is_local

FORMAT = 1


def stamp(url: str) -> list[int] | None:
    """What identifies a local shard's content cheaply (size, mtime in ns); None for a remote URL."""
    if not is_local(url):
        return None
    info = os.stat(url)
    return [info.st_size, info.st_mtime_ns]


def read_cache(cache: Path | None) -> dict[str, dict]:
    if cache is None or not cache.is_file():
        return {}
    try:
        data = json.loads(cache.read_text())
    except ValueError:
        return {}  # a damaged cache is only a lost shortcut: count again
    return data.get("shards", {}) if data.get("format") == FORMAT else {}


def shard_sizes(urls: list[str], cache: Path | None = None) -> list[int]:
    known = read_cache(cache)
    entries = {}
    for url in urls:
        entry = known.get(url)
        if entry is None or entry["stamp"] != stamp(url):
            entry = {"samples": count_samples(url), "stamp": stamp(url)}
        entries[url] = entry
    if cache is not None and entries != {url: known.get(url) for url in urls}:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "shards": {**known, **entries}}))
        os.replace(tmp, cache)
    return [entries[url]["samples"] for url in urls]
