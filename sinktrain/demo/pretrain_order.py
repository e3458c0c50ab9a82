"""The sample order the trained demo models are built with: sinktrain's first stream (one reader;
every epoch the shards in a seeded order, streamed through a seeded shuffle buffer).

Kept as it was so the trained demos, and the thresholds the LSG and ReW tests measured on them
(tests/test_recipes_families.py, tests/test_lsg_recipe.py), stay what they are: the demo's planted
behaviour was tuned on this sequence. Training runs use the global order of sinktrain.data.stream.
"""

from __future__ import annotations

import itertools
import random
from typing import Callable, Iterator

import webdataset as wds


def shuffled(samples: Iterator[dict], buffer_size: int, rng: random.Random) -> Iterator[dict]:
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        slot = rng.randrange(buffer_size)
        yield buffer[slot]
        buffer[slot] = sample
    rng.shuffle(buffer)
    yield from buffer


def demo_examples(shards: list[str], encode: Callable[[dict], dict], seed: int, buffer_size: int = 1000) -> Iterator[dict]:
    """Encoded examples, endlessly, epoch after epoch, with the position keys the collator reads."""
    index = itertools.count()
    for epoch in itertools.count():
        order = list(shards)
        random.Random(f"{seed}-0-{epoch}").shuffle(order)
        tars = wds.WebDataset(order, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
        for raw in shuffled(iter(tars), buffer_size, random.Random(f"{seed}-0-{epoch}-buffer")):
            yield dict(encode(raw), lane=0, index=next(index), bad=0)
