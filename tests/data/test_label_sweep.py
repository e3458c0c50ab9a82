"""The label mask's one-sweep overlap test (sinktrain.data.chat.engine.overlapping) gives what testing
every target range per token gives, for tokens in text order, empty tokens, tokens across a range's
edge, and offsets out of text order."""

import random

from sinktrain.data.chat.engine import overlapping, overlaps


def brute_force(offsets, ranges):
    return [overlaps(start, end, ranges) for start, end in offsets]


def random_case(rng: random.Random):
    cuts = sorted(rng.sample(range(1, 200), 2 * rng.randint(0, 6)))
    ranges = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2)]
    offsets, position = [(0, 0)], 0  # a bos: an empty span
    while position < 200:
        width = rng.choice([0, 1, 1, 2, 3, 7])
        offsets.append((position, position + width))
        position += width or 1
    return offsets, ranges


def test_the_sweep_agrees_with_testing_every_range():
    rng = random.Random(0)
    for _ in range(500):
        offsets, ranges = random_case(rng)
        assert overlapping(offsets, ranges) == brute_force(offsets, ranges), (offsets, ranges)
        shuffled = rng.sample(offsets, len(offsets))  # out of text order: the per-token test
        assert overlapping(shuffled, ranges) == brute_force(shuffled, ranges)


def test_a_token_across_a_range_edge_is_a_label():
    assert overlapping([(0, 3), (3, 6), (6, 9), (9, 12)], [(4, 5), (8, 10)]) == [False, True, True, True]
