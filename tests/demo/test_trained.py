"""The trained demo models' finetune encodes every sample once and then reuses it (``EncodedOnce``).

The reproducibility test's short builds end before any sample comes round again, so this checks
the reuse itself: what comes back for a sample seen before equals what the encoder makes of it,
whatever was done to earlier copies in place.
"""

import itertools

import pytest
import torch

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.order import lane_samples
from sinktrain.data.stream import ShardStream, expand_shards
from sinktrain.data.tar_samples import ReadStats
from sinktrain.demo.trained import EncodedOnce

SAMPLES = 12


def assert_equal_examples(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name, value in first.items():
        if isinstance(value, dict):
            assert_equal_examples(value, second[name])
        elif isinstance(value, torch.Tensor):
            assert value.dtype == second[name].dtype and torch.equal(value, second[name]), name
        else:
            assert value == second[name], name


def scribble_on(example: dict) -> None:
    """What a careless collator or forward could do to a batch's tensors in place."""
    for value in [*example.values(), *example["vision"].values()]:
        if isinstance(value, torch.Tensor):
            value.zero_()


@pytest.mark.parametrize("family", sorted(demo.BUILDERS))
def test_a_remembered_sample_is_the_encoded_sample(family):
    encode = load_backbone(str(demo.ensure_demo_model(family))).encoder(max_length=512)
    stream = ShardStream(expand_shards(demo.demo_data_pattern()), encode, rank=0, world_size=1, num_workers=0)
    raws = [raw for _, raw in itertools.islice(lane_samples(stream.order, stream.shards, 0, 0, ReadStats()), SAMPLES)]
    once = EncodedOnce(encode)
    for raw in raws:
        scribble_on(once(raw))
    assert len(once.examples) == SAMPLES  # every sample once, under its own key
    for raw in raws:
        assert_equal_examples(once(raw), encode(raw))
