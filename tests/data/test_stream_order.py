"""The shard stream's global order, part 1: real tar shards, real DataLoader worker processes.
One sequence of micro-batches for the job whatever its ranks and workers, every sample once per
epoch whatever the shard sizes, seeded orders, and the index the order is computed from. (Resume:
test_stream_resume.py; broken samples and the collator: test_stream_samples.py.)

    python -m pytest tests/data/test_stream_order.py -q
"""

import os
from collections import defaultdict
from itertools import islice

import pytest

from sinktrain.data.order import DataOrder
from sinktrain.data.shard_index import shard_sizes
from sinktrain.data.stream import ShardStream, expand_shards
from sinktrain.errors import SinkTrainError
from stream_helpers import job_batches, key_of, key_or_bad, keys_of, write_sized


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
def test_the_job_sees_one_sequence_of_micro_batches_for_any_ranks_and_workers(tmp_path):
    shards, _ = write_sized(tmp_path, [3, 11, 1, 7, 2, 9])
    settings = dict(lanes=4, micro_batch=2, seed=5, shuffle_buffer=4)
    reference = keys_of(job_batches(shards, key_or_bad, world_size=1, num_workers=0, count=24, **settings))
    for world_size, num_workers in [(1, 2), (2, 1), (2, 2), (4, 1)]:
        got = job_batches(shards, key_or_bad, world_size=world_size, num_workers=num_workers, count=24, **settings)
        assert keys_of(got) == reference, (world_size, num_workers)
        if world_size * num_workers == 4:  # one reader per lane: each lane was read by one process of its own
            pids = defaultdict(set)
            for batch in got:
                pids[batch[0]["lane"]] |= {s["pid"] for s in batch}
            assert all(len(p) == 1 for p in pids.values()) and len(set.union(*pids.values())) == 4
    assert len(reference) == 24 and all(len(batch) == 2 for batch in reference)


def test_every_sample_is_read_once_per_epoch_whatever_the_shard_sizes(tmp_path):
    sizes = [1, 40, 2, 3, 30, 1]
    shards, keys = write_sized(tmp_path, sizes)
    everything = sorted(k for shard in keys for k in shard)
    order = DataOrder(tuple(sizes), lanes=5, window=6, seed=1)
    batches = job_batches(shards, key_of, world_size=1, num_workers=0, count=5 * 32, lanes=5, micro_batch=1,
                          seed=1, shuffle_buffer=6)
    by_lane = defaultdict(list)
    for (sample,) in batches:
        by_lane[sample["lane"]].append(sample["key"])
    epochs = []
    for epoch in range(2):
        seen = []
        for lane, drawn in by_lane.items():
            length = order.lane_length(lane)
            seen += drawn[epoch * length : (epoch + 1) * length]
        epochs.append(seen)
    assert sorted(epochs[0]) == sorted(epochs[1]) == everything  # the 40-sample shard is not under-read,
    assert epochs[0] != epochs[1]  # ...nor the 1-sample shards repeated; each epoch in a new order


@pytest.mark.parametrize("window", [5, 1000])
def test_each_epoch_is_the_same_set_in_a_new_seeded_order(tmp_path, window):
    shards, keys = write_sized(tmp_path, [5, 7, 4, 6])
    everything = sorted(k for shard in keys for k in shard)
    n = len(everything)

    def draw(seed):
        stream = ShardStream(shards, key_of, rank=0, world_size=1, num_workers=1, seed=seed, shuffle_buffer=window)
        return [s["key"] for s in islice(iter(stream), 3 * n)]

    keys_drawn = draw(seed=3)
    epochs = [keys_drawn[e * n : (e + 1) * n] for e in range(3)]
    assert all(sorted(e) == everything for e in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
    assert draw(seed=3) == keys_drawn  # seeded: the same order again
    assert draw(seed=4) != keys_drawn


def test_each_epoch_walks_the_shards_in_a_new_seeded_order(tmp_path):
    shards, _ = write_sized(tmp_path, [2, 2, 2, 2])
    stream = ShardStream(shards, key_of, rank=0, world_size=1, num_workers=1, seed=0, shuffle_buffer=2)
    drawn = [s["key"] for s in islice(iter(stream), 8 * 6)]
    orders = {tuple(k[: k.index("_")] for k in drawn[e * 8 : (e + 1) * 8 : 2]) for e in range(6)}
    assert all(sorted(order) == ["s0", "s1", "s2", "s3"] for order in orders)
    assert len(orders) > 1


def test_shuffle_buffer_zero_keeps_the_shard_order(tmp_path):
    shards, keys = write_sized(tmp_path, [6, 3])
    stream = ShardStream(shards, key_of, rank=0, world_size=1, num_workers=1, shuffle_buffer=0)
    assert [s["key"] for s in islice(iter(stream), 18)] == (keys[0] + keys[1]) * 2


def test_the_index_counts_headers_once_and_again_only_for_a_changed_shard(tmp_path):
    shards, _ = write_sized(tmp_path, [3, 5])
    cache = tmp_path / "run" / "data_index.json"
    assert shard_sizes(shards, cache) == [3, 5] and cache.is_file()
    written = cache.stat().st_mtime_ns
    assert shard_sizes(shards, cache) == [3, 5] and cache.stat().st_mtime_ns == written  # reused as is
    write_sized(tmp_path, [3, 2])  # the second shard rewritten with fewer samples
    os.utime(shards[1], ns=(1, 1))
    assert shard_sizes(shards, cache) == [3, 2]
    cache.write_text("{damaged")
    assert shard_sizes(shards, cache) == [3, 2]  # a damaged cache is counted again, not trusted


def test_remote_shards_are_streamed_through_webdataset(tmp_path):
    shards, keys = write_sized(tmp_path, [4, 3])
    remote = [f"pipe:cat {shard}" for shard in shards]
    assert shard_sizes(remote) == [4, 3]
    local = ShardStream(shards, key_of, rank=0, world_size=1, num_workers=0, seed=2, shuffle_buffer=3)
    piped = ShardStream(remote, key_of, rank=0, world_size=1, num_workers=0, seed=2, shuffle_buffer=3)
    assert [s["key"] for s in islice(iter(piped), 14)] == [s["key"] for s in islice(iter(local), 14)]


def test_expand_shards_errors_name_the_problem(tmp_path):
    shards, _ = write_sized(tmp_path, [2, 2])
    pattern = str(tmp_path / "s-{000000..000001}.tar")
    assert expand_shards(pattern) == shards
    assert expand_shards(str(tmp_path / "s-*.tar")) == shards
    assert expand_shards(f"{shards[1]}::{shards[0]}") == [shards[1], shards[0]]

    with pytest.raises(SinkTrainError, match="matches no shard") as nothing:
        expand_shards(str(tmp_path / "nothing-*.tar"))
    assert "nothing-*.tar" in str(nothing.value)
    with pytest.raises(SinkTrainError, match="matches no shard"):
        expand_shards(str(tmp_path / "t-{000000..000003}.tar"))
    with pytest.raises(SinkTrainError, match=r"2 of 4 shards do not exist") as missing:
        expand_shards(str(tmp_path / "s-{000000..000003}.tar"))
    assert str(tmp_path / "s-000002.tar") in str(missing.value) and "brace range" in str(missing.value)


def test_fewer_samples_than_lanes_is_refused_with_the_fix(tmp_path):
    shards, _ = write_sized(tmp_path, [1, 2])
    with pytest.raises(SinkTrainError) as err:
        ShardStream(shards, key_of, rank=0, world_size=2, num_workers=2)
    message = str(err.value)
    assert "3 readable samples" in message and "4 data lanes" in message and "--data_lanes" in message
    ShardStream(shards, key_of, rank=0, world_size=1, num_workers=3)  # three lanes of one sample each
