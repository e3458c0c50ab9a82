"""The shard stream end to end: real tar shards, real DataLoader worker processes, the real demo
tokenizer and image processor. Covers reader splitting, endless equal-length streams, exact
resume, clear errors, broken and over-long samples, the bad-sample budget and the collator.

    python -m pytest tests/data/test_stream.py -q
"""

import io
import json
import logging
import os
from collections import defaultdict
from itertools import islice

import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader
from transformers import AutoProcessor

from sinktrain.backbones.llava import SquareImagePreprocessor
from sinktrain.data.collate import Collator
from sinktrain.data.encode import SampleEncoder
from sinktrain.data.shards import write_shards
from sinktrain.data.stream import (
    BadSample,
    ReaderState,
    ShardStream,
    StreamState,
    check_enough_shards,
    expand_shards,
)
from sinktrain.errors import SinkTrainError
from sinktrain.train.loop import check_bad_fraction

M = -100  # IGNORE_INDEX, written out so a change there fails these tests


# --- helpers (module level, so DataLoader workers can pickle them) -----------------------------


def key_of(raw):
    return {"key": raw["__key__"], "pid": os.getpid()}


def key_or_bad(raw):
    """Every shard's fourth sample ('..._3') is a bad sample: exercises the bad counter on resume."""
    if raw["__key__"].endswith("_3"):
        raise BadSample("marked bad by the test")
    return {"key": raw["__key__"]}


class Keyed:
    """The real SampleEncoder, with the sample's key added so tests can tell samples apart."""

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, raw):
        return dict(self.encoder(raw), key=raw["__key__"])


def always_bad(raw):
    raise BadSample("does not fit the template")


def chat(question="Hi?", answer="Hello."):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def write_sized(directory, sizes, prefix="s"):
    """One shard per size; sample keys are '<prefix><shard>_<j>'. Returns (paths, keys per shard)."""
    paths, keys = [], []
    for shard, size in enumerate(sizes):
        ids = [f"{prefix}{shard}_{j}" for j in range(size)]
        samples = (({"id": i, "conversations": chat()}, None, None) for i in ids)
        paths += write_shards(samples, str(directory / f"{prefix}-%06d.tar"), size, start_shard=shard)
        keys.append(ids)
    assert len(paths) == len(sizes)
    return paths, keys


def png(size=(40, 24), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


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


@pytest.fixture
def sinktrain_warnings(caplog):
    """Warnings of the 'sinktrain' logger, even where setup_logging turned propagation off."""
    logger = logging.getLogger("sinktrain")
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="sinktrain"):
        yield caplog
    logger.removeHandler(caplog.handler)


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
        state.update(s["reader"], s["index"], s["bad"])
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


def test_unreadable_shard_data_is_skipped_counted_and_logged(tmp_path, sinktrain_warnings):
    shards, keys = write_sized(tmp_path, [3])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 50)
    stream = ShardStream([shards[0], str(garbage)], key_of, rank=0, world_size=1, num_workers=1, shuffle_buffer=1)
    samples = list(islice(iter(stream), 9))  # three epochs of the good shard
    assert sorted(s["key"] for s in samples) == sorted(keys[0] * 3)
    assert samples[-1]["bad"] >= 2  # the garbage shard counted in (at least) the first two epochs
    assert any("unreadable shard data" in r.getMessage() and str(garbage) in r.getMessage()
               for r in sinktrain_warnings.records)


# --- 5. broken and over-long samples with the real encoder -------------------------------------


@pytest.fixture(scope="module")
def processor(demo_model_dir):
    return AutoProcessor.from_pretrained(str(demo_model_dir))


@pytest.fixture(scope="module")
def num_image_tokens(processor):
    blank = Image.new("RGB", (64, 64))
    ids = processor(text=processor.image_token, images=blank, return_tensors="pt")["input_ids"]
    count = int((ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum())
    assert count == 64  # the demo ViT: (64 / 8) ** 2 patches, CLS dropped
    return count


def encoder(processor, num_image_tokens, max_length):
    tokenizer = processor.tokenizer
    return SampleEncoder(
        tokenizer, SquareImagePreprocessor(processor.image_processor), "v1",
        tokenizer.convert_tokens_to_ids("<image>"), num_image_tokens, max_length,
    )


def test_broken_samples_are_skipped_counted_and_logged(tmp_path, processor, num_image_tokens, sinktrain_warnings):
    question = "<image>\nWhat is in the image?"
    good = [({"id": f"img{i}", "conversations": chat(question, "A red cube.")}, png((40 + 8 * i, 24)), "png")
            for i in range(3)]
    good.append(({"id": "txt", "conversations": chat("How many cats?", "Two cats.")}, None, None))
    corrupt = ({"id": "corruptimg", "conversations": chat(question, "A cube.")}, b"not a png", "png")
    truncated = ({"id": "truncated", "conversations": chat(question, "A cube.")}, png((64, 64))[:60], "png")
    first = write_shards(good[:2] + [corrupt] + good[2:3] + [truncated] + good[3:], str(tmp_path / "a-%06d.tar"), 10)[0]
    second = str(tmp_path / "b-000000.tar")
    with wds.TarWriter(second) as tar:  # write_shards only writes valid JSON, so hand-write this one
        tar.write({"__key__": "badjson", "json": b"{not json"})
        tar.write({"__key__": "img9", "json": json.dumps({"conversations": chat(question, "Blue.")}).encode(),
                   "png": png((30, 50))})

    stream = ShardStream([first, second], Keyed(encoder(processor, num_image_tokens, 512)), rank=0, world_size=1,
                         num_workers=1, seed=0, shuffle_buffer=1)
    samples = list(islice(iter(stream), 5))  # one epoch: 8 raw samples, 3 broken

    assert sorted(s["key"] for s in samples) == ["img0", "img1", "img2", "img9", "txt"]
    skipped = sorted(set(range(8)) - {s["index"] for s in samples})
    assert len(skipped) == 3
    for s in samples:
        assert s["bad"] == sum(i < s["index"] for i in skipped)
        image_tokens = int((s["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<image>")).sum())
        assert s["has_image"] == (s["key"] != "txt")
        assert image_tokens == (num_image_tokens if s["has_image"] else 0)
        assert s["pixel_values"].shape == (3, 64, 64)
    assert next(iter(islice(iter(stream), 5, 6)))["bad"] == 3  # the next epoch starts with all counted

    messages = [r.getMessage() for r in sinktrain_warnings.records if r.levelno == logging.WARNING]
    assert any("corruptimg" in m and first in m and "undecodable image" in m for m in messages)
    assert any("badjson" in m and second in m and "no readable LLaVA record" in m for m in messages)
    assert any("truncated" in m and first in m and "undecodable image" in m for m in messages)


def test_over_long_samples_are_skipped_or_truncated(tmp_path, processor, num_image_tokens, sinktrain_warnings):
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    long_answer = "There are two cats on a red table next to a blue sphere and a green cube. " * 2
    samples = [
        ({"id": "withimage", "conversations": chat("<image>\nWhat is it?", "A red cube.")}, png(), "png"),
        ({"id": "longtext", "conversations": chat("How many cats?", long_answer)}, None, None),
    ]
    shard = write_shards(samples, str(tmp_path / "%06d.tar"), 10)[0]

    def encoded(max_length):
        stream = ShardStream([shard], Keyed(encoder(processor, num_image_tokens, max_length)), rank=0, world_size=1,
                             num_workers=1, shuffle_buffer=1)
        return list(islice(iter(stream), 2))

    full = {s["key"]: s for s in encoded(4096)}
    image_start = full["withimage"]["input_ids"].tolist().index(image_id)
    max_length = image_start + 10  # inside the image of the first sample...
    text = full["longtext"]
    assert text["last_prompt_index"] + 1 < max_length < len(text["input_ids"])  # ...inside the second's answer

    first, again = encoded(max_length)  # one epoch yields only the text sample; the next yields it again
    assert first["key"] == again["key"] == "longtext"
    assert (first["bad"], again["bad"]) == (1, 2)
    assert first["input_ids"].tolist() == text["input_ids"][:max_length].tolist()
    assert first["labels"].tolist() == text["labels"][:max_length].tolist()
    assert first["last_prompt_index"] == text["last_prompt_index"]
    labels, ids = first["labels"].tolist(), first["input_ids"].tolist()
    assert len(labels) == len(ids) == max_length
    assert all(lab in (M, i) for lab, i in zip(labels, ids)) and labels[-1] == ids[-1] != M
    assert labels[: text["last_prompt_index"] + 1] == [M] * (text["last_prompt_index"] + 1)
    messages = [r.getMessage() for r in sinktrain_warnings.records]
    assert any("withimage" in m and shard in m and f"--max_length {max_length}" in m for m in messages)


# --- 6. the broken-sample budget -----------------------------------------------------------------


def test_check_bad_fraction_stops_only_above_the_limit_after_100_samples():
    with pytest.raises(SinkTrainError, match="--max_bad_fraction") as err:
        check_bad_fraction(seen=200, bad=3, limit=0.01)
    assert "3 of 200" in str(err.value)
    check_bad_fraction(seen=200, bad=2, limit=0.01)  # exactly at the limit: go on
    check_bad_fraction(seen=200, bad=1, limit=0.01)
    check_bad_fraction(seen=99, bad=50, limit=0.01)  # too few samples to judge
    with pytest.raises(SinkTrainError):
        check_bad_fraction(seen=100, bad=2, limit=0.01)
    check_bad_fraction(seen=1000, bad=0, limit=0.0)
    with pytest.raises(SinkTrainError):
        check_bad_fraction(seen=1000, bad=1, limit=0.0)


# --- 7. the collator ----------------------------------------------------------------------------


def test_collator_pads_right_and_keeps_positions():
    samples = [
        {"input_ids": torch.tensor([1, 5, 6, 7]), "labels": torch.tensor([M, M, 6, 7]), "last_prompt_index": 1,
         "pixel_values": torch.zeros(3, 4, 4), "has_image": True, "reader": 0, "index": 3, "bad": 0},
        {"input_ids": torch.tensor([1, 8]), "labels": torch.tensor([M, 8]), "last_prompt_index": 0,
         "pixel_values": torch.ones(3, 4, 4), "has_image": False, "reader": 2, "index": 11, "bad": 4},
    ]
    batch, positions = Collator(pad_token_id=99)(samples)
    assert batch.input_ids.tolist() == [[1, 5, 6, 7], [1, 8, 99, 99]]
    assert batch.labels.tolist() == [[M, M, 6, 7], [M, 8, M, M]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.has_image.tolist() == [True, False] and batch.has_image.dtype == torch.bool
    assert batch.last_prompt_index.tolist() == [1, 0]
    assert batch.pixel_values.shape == (2, 3, 4, 4) and batch.pixel_values[1].eq(1).all()
    assert positions == [(0, 3, 0), (2, 11, 4)]


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
def test_collated_batches_from_worker_processes(tmp_path, processor, num_image_tokens):
    question = "<image>\nWhat is in the image?"
    samples = [({"id": f"i{i}", "conversations": chat(question, "A cube." * (i + 1))}, png(), "png") for i in range(3)]
    samples += [({"id": f"t{i}", "conversations": chat("Hi?", "Hello." * (i + 1))}, None, None) for i in range(3)]
    shards = write_shards(samples, str(tmp_path / "%06d.tar"), 3)
    pad = processor.tokenizer.pad_token_id
    stream = ShardStream(shards, encoder(processor, num_image_tokens, 512), rank=0, world_size=1, num_workers=2)
    loader = DataLoader(stream, batch_size=3, num_workers=2, collate_fn=Collator(pad))
    for batch, positions in islice(loader, 4):
        lengths = batch.attention_mask.sum(1)
        assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
        assert lengths.max() == batch.input_ids.shape[1]
        for row, length in enumerate(lengths.tolist()):
            assert batch.input_ids[row, length:].eq(pad).all() and batch.labels[row, length:].eq(M).all()
            assert not batch.input_ids[row, :length].eq(pad).any()
        assert batch.pixel_values.shape == (3, 3, 64, 64)
        assert len({reader for reader, _, _ in positions}) == 1 and len(positions) == 3


def test_a_reader_whose_samples_are_all_unusable_fails_instead_of_spinning(tmp_path, monkeypatch):
    import sinktrain.data.stream as stream_module

    monkeypatch.setattr(stream_module, "MAX_BAD_IN_A_ROW", 5)  # a smaller bound, same mechanism
    shards, _ = write_sized(tmp_path, [4, 4])
    stream = ShardStream(shards, always_bad, rank=0, world_size=1, num_workers=1)
    with pytest.raises(SinkTrainError, match="the last 5 samples were all unusable"):
        next(iter(stream))
