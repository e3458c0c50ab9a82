"""A category-balanced subset of local shards (or of a LLaVA JSON's records), drawn reproducibly
from a seed and written as new shards.

    paths = write_balanced(shards, "category", per_category=80, seed=0, out_dir="runs/x/rew_data", num_shards=4)
    records = balanced_records(records, "category", per_category=1667, seed=0)   # tools/make_shards.py

Any JSON field of the records can be the category (DIYSink's ReW: local / global / mixed tasks;
LSG: Cambrian's OCR, general, counting, code, math, science). Every category contributes the same
number of samples: ``per_category``, or by default as many as the smallest category has. Samples
keep their bytes (record and image members), so the subset streams exactly as the originals.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Iterator, TypeVar

from sinktrain.data.shard_format import IMAGE_EXTENSIONS, INDEXED_IMAGE_FIELD, Sample
from sinktrain.data.shards import even_split, write_shards
from sinktrain.errors import SinkTrainError

SETTINGS = "balance.json"  # what the directory was drawn with
T = TypeVar("T")


def shard_samples(shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) of a WebDataset tar, whose members of one sample are adjacent."""
    key, fields = None, {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if not member.isfile():
                continue
            name_key, _, field = member.name.partition(".")
            if name_key != key and key is not None:
                yield key, fields
                fields = {}
            key, fields[field] = name_key, tar.extractfile(member).read()
    if key is not None:
        yield key, fields


def as_sample(fields: dict[str, bytes]) -> Sample:
    """Raw members -> (record, image bytes, extension) as write_shards takes them."""
    record = json.loads(fields["json"])
    indexed = sorted((int(m[1]), m[2], name) for name in fields if (m := INDEXED_IMAGE_FIELD.fullmatch(name)))
    if indexed:
        return record, [fields[name] for _, _, name in indexed], [ext for _, ext, _ in indexed]
    single = next((ext for ext in IMAGE_EXTENSIONS if ext in fields), None)
    return record, (fields[single] if single else None), single


def category_of(fields: dict[str, bytes], field: str, where: str):
    record = json.loads(fields["json"])
    if record.get(field) is None:
        raise SinkTrainError(
            f"{where} has no {field!r} field, but --balance_by {field} balances over it; add it to every record "
            f"(tools/make_shards.py keeps every JSON field), or leave --balance_by out"
        )
    return str(record[field])


def choose(shards: list[str], field: str, per_category: int | None, seed: int) -> set[tuple[int, str]]:
    """The (shard index, key) of the chosen samples: ``per_category`` of each category, at random."""
    by_category: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for index, shard in enumerate(shards):
        if not os.path.isfile(shard):
            raise SinkTrainError(f"--balance_by reads local shards; {shard} is not a local file (copy the shards first)")
        for key, fields in shard_samples(shard):
            by_category[category_of(fields, field, f"sample {key} of {shard}")].append((index, key))
    if not by_category:
        raise SinkTrainError(f"{shards[0]} ... hold no samples to balance")
    return set(pick_balanced(by_category, per_category, seed))


def pick_balanced(groups: dict[str, list[T]], per_category: int | None, seed: int) -> list[T]:
    """``per_category`` members of every group (default: as many as the smallest has), at random from ``seed``."""
    smallest = min(len(members) for members in groups.values())
    take = per_category or smallest
    if take > smallest:
        sizes = ", ".join(f"{name} {len(members)}" for name, members in sorted(groups.items()))
        raise SinkTrainError(f"--per_category {take}: the smallest category has {smallest} samples ({sizes}); pass at most {smallest}")
    rng = random.Random(seed)
    return [member for _, members in sorted(groups.items()) for member in rng.sample(members, take)]


def balanced_records(records: list, field: str, per_category: int | None, seed: int, source: str = "the JSON") -> list:
    """``per_category`` records of every value of ``field``, shuffled with ``seed`` (LLaVA-format
    records, before any image is read: a stratified draw from millions of records is cheap)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        value = record.get(field) if isinstance(record, dict) else None
        if value is None:
            name = record.get("id", f"#{index}") if isinstance(record, dict) else f"#{index}"
            raise SinkTrainError(
                f"record {name} of {source} has no {field!r} field, but --balance_by {field} balances over it; "
                "add it to every record, or leave --balance_by out"
            )
        groups[str(value)].append(index)
    if not groups:
        raise SinkTrainError(f"{source} has no records to balance")
    chosen = pick_balanced(groups, per_category, seed)
    random.Random(seed).shuffle(chosen)
    return [records[index] for index in chosen]


def write_balanced(shards: list[str], field: str, per_category: int | None, seed: int, out_dir: str | Path, num_shards: int) -> list[str]:
    """Write the balanced subset as ``num_shards`` shards in ``out_dir`` (built beside it, then renamed
    into place); a directory already written with the same settings is kept (a resumed run, other ranks)."""
    out_dir = Path(out_dir)
    settings = json.dumps({"shards": shards, "field": field, "per_category": per_category, "seed": seed, "num_shards": num_shards})
    paths = [str(out_dir / f"balanced-{index:06d}.tar") for index in range(num_shards)]
    if (out_dir / SETTINGS).is_file() and (out_dir / SETTINGS).read_text() == settings:
        return paths
    chosen = choose(shards, field, per_category, seed)
    samples = [as_sample(fields) for index, shard in enumerate(shards) for key, fields in shard_samples(shard) if (index, key) in chosen]
    random.Random(seed).shuffle(samples)
    building = out_dir.with_name(f".{out_dir.name}-building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    start = 0
    for index, size in enumerate(even_split(len(samples), num_shards)):
        write_shards(iter(samples[start : start + size]), str(building / "balanced-%06d.tar"), size, start_shard=index)
        start += size
    (building / SETTINGS).write_text(settings)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(building, out_dir)
    return paths
