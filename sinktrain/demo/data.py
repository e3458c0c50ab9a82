"""The demo data: synthetic-scene conversations as WebDataset shards, for training and held-out eval,
image-caption pairs for connector pretraining, and a small multi-image set (2- and 3-image
questions with some single-image and text-only samples in one stream, for multi-image training
such as LLaVA-OneVision's).

Every set comes from ``sinktrain.data.scenes`` with its own seed and is written once into the
cache (``write_demo_shards`` swaps a finished directory in); the shard bytes are a function of
the seed alone (fixed tar member times, deterministic PNG encoding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sinktrain.demo.cache import DEMO_VERSION, cache_dir

SEED = 0
DEMO_SAMPLES, DEMO_SHARDS = 2400, 8
EVAL_SAMPLES, EVAL_SHARDS, EVAL_SEED = 400, 2, 1  # held out: another seed than the training shards
MULTI_SAMPLES, MULTI_SHARDS, MULTI_SEED = 320, 2, 2  # multi-image set: its own generator and seed
CAPTION_SAMPLES, CAPTION_SHARDS, CAPTION_SEED = 1200, 4, 3  # image-caption pairs (connector pretraining)


def demo_shard_dir() -> Path:
    return cache_dir() / f"demo-shards-v{DEMO_VERSION}"


def demo_eval_dir() -> Path:
    return cache_dir() / f"demo-eval-v{DEMO_VERSION}"


def demo_caption_dir() -> Path:
    return cache_dir() / f"demo-captions-v{DEMO_VERSION}"


def demo_multi_dir() -> Path:
    return cache_dir() / f"demo-multi-v{DEMO_VERSION}"


def ensure_shards(target: Path, samples: int, shards: int, seed: int, generate: Callable | None = None) -> Path:
    """Write the set once (`generate`: a sinktrain.data.scenes generator, default demo_samples)."""
    from sinktrain.data.scenes import demo_samples
    from sinktrain.data.shards import write_demo_shards

    if not target.is_dir():
        write_demo_shards(str(target), samples, shards, seed, generate or demo_samples)
    return target


def shard_pattern(directory: Path, shards: int) -> str:
    return str(directory / ("demo-{000000..%06d}.tar" % (shards - 1)))


def ensure_demo_shards() -> Path:
    return ensure_shards(demo_shard_dir(), DEMO_SAMPLES, DEMO_SHARDS, SEED)


def demo_data_pattern() -> str:
    return shard_pattern(ensure_demo_shards(), DEMO_SHARDS)


def demo_eval_pattern() -> str:
    """Held-out demo shards with answers and task categories, for tools/evaluate.py."""
    return shard_pattern(ensure_shards(demo_eval_dir(), EVAL_SAMPLES, EVAL_SHARDS, EVAL_SEED), EVAL_SHARDS)


def demo_multi_image_pattern() -> str:
    """Multi-image demo shards: 2- and 3-image questions, with single-image and text-only samples mixed in."""
    from sinktrain.data.multi_scenes import multi_image_samples

    target = ensure_shards(demo_multi_dir(), MULTI_SAMPLES, MULTI_SHARDS, MULTI_SEED, multi_image_samples)
    return shard_pattern(target, MULTI_SHARDS)


def demo_caption_pattern() -> str:
    """Image-caption demo shards: what DIYSink's stage-1 connector pretraining trains on."""
    from sinktrain.data.scenes import caption_samples

    return shard_pattern(ensure_shards(demo_caption_dir(), CAPTION_SAMPLES, CAPTION_SHARDS, CAPTION_SEED, caption_samples), CAPTION_SHARDS)
