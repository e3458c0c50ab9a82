"""The shard stream's global order, part 2: resume. Exact (the same micro-batches as the
uninterrupted job, samples split into examples and bad samples included), elastic (on another
number of ranks and workers), cheap (at most one shuffle window re-read per lane, wherever the
run stopped), and refused with the fix where it cannot be exact.

    python -m pytest tests/data/test_stream_resume.py -q
"""

import logging
from itertools import islice

import pytest

from sinktrain.data.stream import ShardStream
from sinktrain.data.stream_state import LaneState, StreamState
from sinktrain.data.tar_samples import count_samples, sample_starts
from sinktrain.errors import SinkTrainError
from stream_helpers import job_batches, key_in_parts_or_bad, key_of, recorded_state, write_sized

SETTINGS = dict(lanes=4, micro_batch=2, seed=9, shuffle_buffer=3)


def pieces(batches):
    return [[(s["key"], s["piece"]) for s in batch] for batch in batches]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    shards, _ = write_sized(tmp_path_factory.mktemp("resume"), [3, 4, 5, 6, 7, 2, 3, 4])
    return shards, job_batches(shards, key_in_parts_or_bad, world_size=1, num_workers=0, count=48, **SETTINGS)


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
@pytest.mark.parametrize("taken, before, after", [
    (0, (2, 2), (2, 2)),
    (6, (2, 2), (2, 2)),   # same ranks and workers
    (14, (2, 2), (1, 2)),  # 2 ranks -> 1 (a requeue onto fewer nodes)
    (22, (1, 2), (2, 2)),  # 1 rank -> 2: readers share lanes, the sequence is still the job's
    (30, (1, 1), (2, 1)),
])
def test_resume_continues_the_job_sequence_exactly_on_any_ranks_and_workers(uninterrupted, taken, before, after):
    shards, full = uninterrupted
    assert {s["parts"] for b in full for s in b} == {1, 2, 3} and full[-1][-1]["bad"] > 0  # both in play
    state = recorded_state(full[:taken], SETTINGS["lanes"], SETTINGS["micro_batch"])
    world_size, num_workers = after
    resumed = job_batches(shards, key_in_parts_or_bad, world_size, num_workers, count=48 - taken, resume=state,
                          **SETTINGS)
    assert pieces(resumed) == pieces(full[taken:])
    assert [s["bad"] for b in resumed for s in b] == [s["bad"] for b in full[taken:] for s in b]


@pytest.mark.parametrize("remote", [False, True])
def test_resume_reads_at_most_one_window_per_lane_wherever_it_stopped(tmp_path, remote):
    shards, _ = write_sized(tmp_path, [50] * 8)  # one epoch: 400 samples, 2 lanes of 200
    urls = [f"pipe:cat {shard}" for shard in shards] if remote else shards
    lanes, window, micro_batch = 2, 20, 4
    costs = {}
    for percent in (10, 50, 90):
        consumed = 400 * percent // 100 // micro_batch  # micro-batches the job consumed before it stopped
        state = StreamState(lanes, micro_batch, consumed, {
            lane: LaneState(consumed * micro_batch // lanes) for lane in range(lanes)
        })
        stream = ShardStream(urls, key_of, 0, 1, 0, seed=3, shuffle_buffer=window, resume=state,
                             micro_batch=micro_batch, lanes=lanes)
        list(islice(iter(stream), 2 * micro_batch))  # the next micro-batch of each lane
        costs[percent] = (stream.stats.read, stream.stats.seeked)
    if remote:  # a stream cannot seek: the samples before the window in its shard are read and dropped
        assert all(read <= lanes * (window + 50) for read, _ in costs.values()), costs
    else:  # a local shard seeks to the window: each lane reads exactly its one window again, wherever
        assert {read for read, _ in costs.values()} == {lanes * window}, costs
        assert all(seeked <= lanes * 50 for _, seeked in costs.values())
    assert costs[90][0] < 360  # a replay from the start of the epoch would read 360


def test_a_checkpoint_between_two_examples_of_one_sample_resumes_with_the_next(uninterrupted):
    shards, full = uninterrupted
    flat = [s for b in full for s in b]
    cut = next(i for i, s in enumerate(flat) if s["part"] == 1 and s["parts"] == 3 and i % 2 == 0)
    state = recorded_state(full[: cut // 2], SETTINGS["lanes"], SETTINGS["micro_batch"])
    lane = flat[cut]["lane"]
    assert state.states[lane].parts_done == 1  # the sample's first example was used, its other two were not
    resumed = job_batches(shards, key_in_parts_or_bad, 1, 0, count=len(full) - cut // 2, resume=state, **SETTINGS)
    assert pieces(resumed) == pieces(full[cut // 2 :])


def test_a_truncated_shard_counts_its_lost_samples_as_bad_and_keeps_every_position(tmp_path, sinktrain_warnings):
    shards, keys = write_sized(tmp_path, [6, 4])
    data, fifth, sixth = open(shards[0], "rb").read(), *sample_starts(shards[0])[4:6]
    open(shards[0], "wb").write(data[: (fifth + sixth) // 2 + 100])  # cut inside the fifth sample's record
    counted = count_samples(shards[0])  # the headers before the cut
    stream = ShardStream(shards, key_of, 0, 1, 0, shuffle_buffer=0)
    first_epoch = list(islice(iter(stream), 8))
    given = next(i for i, s in enumerate(first_epoch) if s["key"].startswith("s1_"))
    assert 3 <= given < counted <= 5  # the stream lost the sample the cut runs through
    assert [s["key"] for s in first_epoch[: given + 4]] == keys[0][:given] + keys[1]
    assert [s["index"] for s in first_epoch[given : given + 4]] == list(range(counted, counted + 4))  # as indexed
    assert first_epoch[given]["bad"] == counted - given  # the lost samples, counted as bad
    assert any("unreadable shard data" in r.getMessage() and shards[0] in r.getMessage() for r in sinktrain_warnings.records)


def test_an_unreadable_shard_is_named_and_left_out(tmp_path, sinktrain_warnings):
    shards, keys = write_sized(tmp_path, [3])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 50)
    stream = ShardStream([shards[0], str(garbage)], key_of, 0, 1, 0, shuffle_buffer=0)
    assert [s["key"] for s in islice(iter(stream), 6)] == keys[0] * 2
    assert any("unreadable shard data" in r.getMessage() and str(garbage) in r.getMessage()
               for r in sinktrain_warnings.records if r.levelno == logging.WARNING)


def test_resuming_with_another_cut_of_the_order_is_refused_with_the_fix(tmp_path):
    shards, _ = write_sized(tmp_path, [4, 4])
    state = StreamState(lanes=4, micro_batch=2, micro_batches=6)
    with pytest.raises(SinkTrainError, match="micro-batches of 2 samples.*--per_device_batch_size 2"):
        ShardStream(shards, key_of, 0, 1, 0, resume=state, micro_batch=3)
    with pytest.raises(SinkTrainError, match="--data_lanes 8: .* 4 lanes.*--data_lanes 4"):
        ShardStream(shards, key_of, 0, 1, 0, resume=state, micro_batch=2, lanes=8)
    with pytest.raises(SinkTrainError, match="6 micro-batches, which 4 ranks cannot share"):
        ShardStream(shards, key_of, 0, 4, 0, resume=state, micro_batch=2)
    with pytest.raises(SinkTrainError, match="earlier sinktrain"):
        StreamState.from_dict({"readers": 4, "states": {}})
    ShardStream(shards, key_of, 1, 2, 0, resume=state, micro_batch=2)  # 2 ranks share 6 micro-batches


def test_stream_state_round_trips_and_merges_to_the_furthest_position():
    state = StreamState(4, micro_batch=2)
    state.update(0, 9, 1)
    state.update(0, 4, 0)  # an older position (e.g. a prefetched batch recorded late) never rewinds
    state.update(2, 0, 0)
    assert state.states == {0: LaneState(10, 1), 2: LaneState(1, 0)}
    state.update(3, 6, 0, part=0, parts=3)  # the first of sample 6's three examples: 6 consumed, 1 of the 7th used
    assert state.states[3] == LaneState(6, 0, 1)
    state.update(3, 6, 0, part=2, parts=3)  # its last: sample 6 consumed
    assert state.states.pop(3) == LaneState(7, 0, 0)
    assert StreamState.from_dict(state.to_dict()) == state

    other = StreamState(4, 2, micro_batches=12, states={0: LaneState(3, 0), 1: LaneState(7, 2), 2: LaneState(5, 1)})
    state.merge(other)
    assert state.states == {0: LaneState(10, 1), 1: LaneState(7, 2), 2: LaneState(5, 1)}
    assert state.totals() == (22, 4) and state.micro_batches == 12
