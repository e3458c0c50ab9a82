"""The shard stream end to end, part 1: real tar shards, real DataLoader worker processes. Covers
reader splitting, endless equal-length streams, exact resume and clear errors. (Broken and
over-long samples, the bad-sample budget and the collator: test_stream_samples.py.)

    python -m pytest tests/data/test_stream_readers.py -q
"""

import json
import os
from collections import defaultdict
from itertools import islice

import pytest
from torch.utils.data import DataLoader

from sinktrain.data.stream import (
    ReaderState,
    ShardStream,
    StreamState,
    check_enough_shards,
    expand_shards,
)
from sinktrain.errors import SinkTrainError
from stream_helpers import key_in_parts, key_of, key_or_bad, write_sized


def draw_by_reader(stream, wanted, batch_size=None, limit=400):
    """Samples from a real 2-worker DataLoader, grouped by reader, until each reader has `wanted`."""
    loader = DataLoader(stream, batch_size=batch_size, num_workers=2, collate_fn=None if batch_size is None else list)
    got = defaultdict(list)
    for n, item in enumerate(loader):
        for sample in [item] if batch_size is None else item:
            got[sample["reader"]].append(sample)
        if all(len(got[r]) >= w for r, w in wanted.items()):
            return got
        assert n < limit, f"readers stalled: {[(r, len(s)) for r, s in got.items()]}"


def trace(samples):
    return [(s["key"], s["reader"], s["index"], s["bad"]) for s in samples]


# --- 1. readers split the shards ----------------------------------------------------------------


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
def test_two_ranks_two_workers_see_disjoint_samples_covering_every_shard(tmp_path):
    sizes = [3, 4, 5, 6, 7, 2, 3, 4]
    shards, keys = write_sized(tmp_path, sizes)
    readers = 4  # reader u owns shards u and u + 4
    epoch = {u: sizes[u] + sizes[u + readers] for u in range(readers)}
    owned = {u: set(keys[u]) | set(keys[u + readers]) for u in range(readers)}

    first_epoch = {}
    for rank in (0, 1):
        stream = ShardStream(shards, key_of, rank=rank, world_size=2, num_workers=2, seed=5, shuffle_buffer=4)
        mine = {2 * rank, 2 * rank + 1}
        got = draw_by_reader(stream, {u: epoch[u] for u in mine})
        assert set(got) == mine
        pids = {u: {s["pid"] for s in got[u]} for u in mine}
        assert all(len(p) == 1 for p in pids.values()), "a reader moved between processes"
        assert len(set.union(*pids.values())) == 2 and os.getpid() not in set.union(*pids.values())
        for u in mine:
            first = got[u][: epoch[u]]
            assert [s["index"] for s in first] == list(range(epoch[u]))
            assert sorted(s["key"] for s in first) == sorted(owned[u])  # each once, none foreign
            first_epoch[u] = {s["key"] for s in first}

    union = set.union(*first_epoch.values())
    assert sum(len(k) for k in first_epoch.values()) == len(union)  # disjoint
    assert union == {k for shard in keys for k in shard}


# --- 2. endless streams: equal step counts whatever the shard sizes -----------------------------


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
def test_unequal_shards_give_every_rank_the_same_number_of_batches(tmp_path):
    sizes = [3, 17, 5, 40]
    shards, keys = write_sized(tmp_path, sizes)
    counts = []
    for rank in (0, 1):
        stream = ShardStream(shards, key_of, rank=rank, world_size=2, num_workers=2, seed=1, shuffle_buffer=8)
        loader = DataLoader(stream, batch_size=4, num_workers=2, collate_fn=list)
        batches = list(islice(loader, 50))
        counts.append(len(batches))
        assert all(len(b) == 4 and len({s["reader"] for s in b}) == 1 for b in batches)
        by_reader = defaultdict(list)
        for sample in (s for b in batches for s in b):
            by_reader[sample["reader"]].append(sample)
        assert set(by_reader) == {2 * rank, 2 * rank + 1}
        for u, samples in by_reader.items():
            assert [s["index"] for s in samples] == list(range(len(samples)))
            n = sizes[u]  # one shard per reader
            for e in range(len(samples) // n):  # every complete epoch is the whole shard once
                assert sorted(s["key"] for s in samples[e * n : (e + 1) * n]) == sorted(keys[u])
    assert counts == [50, 50]
    assert len(by_reader[3]) == 100 > sizes[3]  # even the 40-sample reader wrapped


@pytest.mark.parametrize("buffer", [5, 1000])
def test_each_epoch_is_the_same_set_in_a_new_seeded_order(tmp_path, buffer):
    shards, keys = write_sized(tmp_path, [5, 7, 4, 6])
    everything = sorted(k for shard in keys for k in shard)
    n = len(everything)

    def draw(seed):
        stream = ShardStream(shards, key_of, rank=0, world_size=1, num_workers=1, seed=seed, shuffle_buffer=buffer)
        return [s["key"] for s in islice(iter(stream), 3 * n)]

    keys_drawn = draw(seed=3)
    epochs = [keys_drawn[e * n : (e + 1) * n] for e in range(3)]
    assert all(sorted(e) == everything for e in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
    assert draw(seed=3) == keys_drawn  # seeded: the same order again
    assert draw(seed=4) != keys_drawn


def test_each_epoch_walks_the_shards_in_a_new_seeded_order(tmp_path):
    shards, keys = write_sized(tmp_path, [2, 2, 2, 2])
    stream = ShardStream(shards, key_of, rank=0, world_size=1, num_workers=1, seed=0, shuffle_buffer=1)
    drawn = [s["key"] for s in islice(iter(stream), 8 * 6)]
    orders = {tuple(k[: k.index("_")] for k in drawn[e * 8 : (e + 1) * 8 : 2]) for e in range(6)}
    assert all(sorted(order) == ["s0", "s1", "s2", "s3"] for order in orders)
    assert len(orders) > 1


def test_shuffle_buffer_zero_keeps_the_shard_order(tmp_path):
    shards, keys = write_sized(tmp_path, [6])
    stream = ShardStream(shards, key_of, rank=0, world_size=1, num_workers=1, shuffle_buffer=0)
    assert [s["key"] for s in islice(iter(stream), 12)] == keys[0] * 2


# --- 3. exact resume ------------------------------------------------------------------------


def state_of(samples, readers):
    state = StreamState(readers)
    for s in samples:
        state.update(s["reader"], s["index"], s["bad"], s["part"], s["parts"])
    return state


@pytest.mark.parametrize("taken", [0, 7, 18, 25])
def test_resume_continues_exactly_where_the_uninterrupted_stream_goes(tmp_path, taken):
    # 22 raw samples per epoch, 4 of them bad ('_3'), so 18 yielded: 18 ends epoch 0, 25 is in epoch 1.
    shards, _ = write_sized(tmp_path, [5, 7, 4, 6])

    def stream(resume=None):
        return ShardStream(shards, key_or_bad, rank=0, world_size=1, num_workers=1, seed=2, shuffle_buffer=3,
                           resume=resume)

    full = list(islice(iter(stream()), 60))
    assert full[-1]["index"] >= 44 and full[-1]["bad"] >= 8  # crossed at least two epochs
    state = state_of(full[:taken], readers=1)
    resumed = list(islice(iter(stream(resume=state)), 60 - taken))
    assert trace(resumed) == trace(full[taken:])


@pytest.mark.parametrize("taken", [0, 1, 2, 5, 13, 30])
def test_samples_split_into_examples_resume_between_two_examples_of_one_sample(tmp_path, taken):
    """LSG's one example per turn: a checkpoint taken after some of a sample's examples resumes with
    the next one, not with the next sample (nor by repeating the sample's first examples)."""
    shards, _ = write_sized(tmp_path, [5, 7, 4])

    def stream(resume=None):
        return ShardStream(shards, key_in_parts, rank=0, world_size=1, num_workers=1, seed=4, shuffle_buffer=3, resume=resume)

    full = list(islice(iter(stream()), 50))
    assert {s["parts"] for s in full} == {1, 2, 3} and [s["piece"] for s in full[:3]] == [s["part"] for s in full[:3]]
    state = state_of(full[:taken], readers=1)
    resumed = list(islice(iter(stream(resume=state)), 50 - taken))
    assert [(s["key"], s["piece"]) for s in resumed] == [(s["key"], s["piece"]) for s in full[taken:]]


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
def test_resume_with_dataloader_workers_continues_every_reader_exactly(tmp_path):
    shards, _ = write_sized(tmp_path, [3, 4, 5, 6, 7, 2, 3, 4])

    def stream(rank, resume=None):
        return ShardStream(shards, key_or_bad, rank=rank, world_size=2, num_workers=2, seed=9, shuffle_buffer=3,
                           resume=resume)

    def batches(rank, count, resume=None):
        loader = DataLoader(stream(rank, resume), batch_size=2, num_workers=2, collate_fn=list)
        return [s for b in islice(loader, count) for s in b]

    # What each rank's training loop recorded after 5 batches, gathered as gather_stream_state does.
    gathered = StreamState(4)
    for rank in (0, 1):
        local = state_of(batches(rank, 5), readers=4)
        gathered.merge(StreamState.from_dict(json.loads(json.dumps(local.to_dict()))))
    assert set(gathered.states) == {0, 1, 2, 3}

    for rank in (0, 1):
        full, resumed = defaultdict(list), defaultdict(list)
        for s in batches(rank, 20):
            full[s["reader"]].append(s)
        for s in batches(rank, 12, resume=gathered):
            resumed[s["reader"]].append(s)
        for u in (2 * rank, 2 * rank + 1):
            k = next(i for i, s in enumerate(full[u]) if s["index"] >= gathered.states[u].consumed)
            assert len(resumed[u]) >= 6 and k + len(resumed[u]) <= len(full[u])
            assert trace(resumed[u]) == trace(full[u][k : k + len(resumed[u])])


def test_stream_state_round_trips_and_merges_to_the_furthest_position():
    state = StreamState(4)
    state.update(0, 9, 1)
    state.update(0, 4, 0)  # an older position (e.g. a prefetched batch recorded late) never rewinds
    state.update(2, 0, 0)
    assert state.states == {0: ReaderState(10, 1), 2: ReaderState(1, 0)}
    state.update(3, 6, 0, part=0, parts=3)  # the first of sample 6's three examples: 6 consumed, 1 of the 7th used
    assert state.states[3] == ReaderState(6, 0, 1)
    state.update(3, 6, 0, part=2, parts=3)  # its last: sample 6 consumed
    assert state.states.pop(3) == ReaderState(7, 0, 0)
    back = StreamState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back == state

    other = StreamState(4, {0: ReaderState(3, 0), 1: ReaderState(7, 2), 2: ReaderState(5, 1)})
    state.merge(other)
    assert state.states == {0: ReaderState(10, 1), 1: ReaderState(7, 2), 2: ReaderState(5, 1)}
    assert state.totals() == (22, 4)


# --- 4. errors --------------------------------------------------------------------------------


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


def test_too_few_shards_for_the_readers_is_refused_with_the_fix(tmp_path):
    with pytest.raises(SinkTrainError) as err:
        check_enough_shards(3, world_size=2, num_workers=2)
    message = str(err.value)
    assert "3 shards" in message and "2 ranks x 2 data workers = 4 readers" in message
    assert "at least 4 shards" in message and "--num_workers" in message
    check_enough_shards(4, 2, 2)
    check_enough_shards(2, 2, 0)  # no workers: each rank is one reader

    shards, _ = write_sized(tmp_path, [1, 1, 1])
    with pytest.raises(SinkTrainError, match="3 shards"):
        ShardStream(shards, key_of, rank=0, world_size=2, num_workers=2)


def test_resume_with_another_number_of_readers_is_refused(tmp_path):
    shards, _ = write_sized(tmp_path, [1, 1, 1, 1])
    with pytest.raises(SinkTrainError) as err:
        ShardStream(shards, key_of, rank=0, world_size=1, num_workers=2, resume=StreamState(4))
    message = str(err.value)
    assert "4 readers" in message and "has 2" in message and "--num_workers" in message


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
def test_a_reader_with_no_readable_sample_fails_instead_of_hanging(tmp_path):
    shards, _ = write_sized(tmp_path, [3])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 50)
    stream = ShardStream([shards[0], str(garbage)], key_of, rank=0, world_size=1, num_workers=2)
    with pytest.raises(SinkTrainError, match="read no sample") as err:
        list(islice(DataLoader(stream, batch_size=None, num_workers=2), 4))  # worker 1 owns only the garbage
    assert "data reader 1" in str(err.value) and str(garbage) in str(err.value)
