"""Loading a benchmark's rows with ``datasets``: from the Hub, or a local copy for offline clusters.

    rows = load_rows(get_benchmark("mmstar"))                       # Lin-Chen/MMStar, split val
    rows = load_rows(bench, "/data/MMStar")                          # a snapshot of the Hub repo
    rows = load_rows(bench, "/data/mmstar/*.parquet", limit=100)     # parquet files, same columns

A local directory is read like the Hub repo it copies (``huggingface-cli download ID --repo-type
dataset --local-dir DIR``): its README's configs when it has them, else its data files; a
``save_to_disk`` directory works too. When the benchmark's split is not there but the copy holds
exactly one split, that one is used (a copy of only the evaluation split often names it "train").
Every required column is checked before anything is generated.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

from sinktrain.benchmarks.base import Benchmark
from sinktrain.errors import SinkTrainError


def load_rows(bench: Benchmark, path: str | None = None, split: str | None = None, limit: int | None = None):
    """The benchmark's rows (a ``datasets.Dataset``), the first ``limit`` of them when given."""
    if limit is not None and limit < 1:
        raise SinkTrainError(f"--limit {limit}: pass a positive number of samples (or leave it out for all)")
    rows = read_split(bench, path, split or bench.split)
    check_columns(bench, rows, path or bench.hub_id)
    return rows.select(range(min(limit, len(rows)))) if limit is not None else rows


def read_split(bench: Benchmark, path: str | None, split: str):
    import datasets

    datasets.disable_progress_bars()  # "Generating test split" bars for every load would bury the evaluation's own
    source = path or bench.hub_id
    try:
        if path and (Path(path, "dataset_dict.json").exists() or Path(path, "state.json").exists()):
            return one_split(datasets.load_from_disk(path), split, source)
        cache = {"cache_dir": local_cache_dir(path)} if path and (is_parquet(path) or Path(path).is_dir()) else {}
        if path and is_parquet(path):
            return datasets.load_dataset("parquet", data_files=sorted(glob.glob(path)) or path, split="train", **cache)
        config = config_for(bench, path)
        try:
            return datasets.load_dataset(source, config, split=split, **cache)
        except ValueError as err:
            if "split" not in str(err).lower():
                raise
            return one_split(datasets.load_dataset(source, config, **cache), split, source)
    except SinkTrainError:
        raise
    except Exception as err:  # datasets raises many kinds (offline, not found, bad files); all mean "cannot read it"
        raise SinkTrainError(
            f"cannot load {bench.name} from {source!r} ({type(err).__name__}: {err}); pass --benchmark_path with a local "
            f"copy (huggingface-cli download {bench.hub_id} --repo-type dataset --local-dir DIR) or parquet files in its schema"
        ) from err


def local_cache_dir(path: str) -> str:
    """A datasets cache of this local copy alone. datasets keys a local folder's cache by its name
    and file layout only, so a second copy with the same name elsewhere (or a copy rewritten in
    place) would be read from the first one's cache; this key adds the absolute path and every
    file's size and modification time."""
    import datasets

    files = sorted(Path(path).rglob("*")) if Path(path).is_dir() else sorted(Path(p) for p in glob.glob(path))
    stamp = [str(Path(path).resolve())] + [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    digest = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "sinktrain-local" / digest)


def is_parquet(path: str) -> bool:
    return path.endswith(".parquet") or bool(glob.glob(path)) and all(p.endswith(".parquet") for p in glob.glob(path))


def config_for(bench: Benchmark, path: str | None) -> str | None:
    """The benchmark's config on the Hub; for a local copy only when its README declares it."""
    if path is None or bench.config is None:
        return bench.config
    import datasets

    return bench.config if bench.config in datasets.get_dataset_config_names(path) else None


def one_split(splits, split: str, source: str):
    if not hasattr(splits, "keys"):  # a single saved Dataset
        return splits
    if split in splits:
        return splits[split]
    if len(splits) == 1:
        return next(iter(splits.values()))
    raise SinkTrainError(f"{source!r} has splits {', '.join(splits)} but not {split!r}; pass --benchmark_split with one of them")


def check_columns(bench: Benchmark, rows, source: str) -> None:
    missing = [column for column in bench.columns if column not in rows.column_names]
    if missing:
        raise SinkTrainError(
            f"{bench.name} data at {source!r} has no column {', '.join(repr(c) for c in missing)}; it needs "
            f"{', '.join(bench.columns)} (the schema of {bench.hub_id} on the Hub)"
        )
