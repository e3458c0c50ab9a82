"""Shared helpers of the shard stream tests (test_stream_readers.py, test_stream_samples.py): the
per-sample functions the streams run, and small shards and images to stream."""

import io
import os
from itertools import islice

from PIL import Image

from sinktrain.data.shards import write_shards
from sinktrain.data.stream import BadSample


# --- per-sample functions (module level, so DataLoader workers can pickle them) ---------------


def key_of(raw):
    return {"key": raw["__key__"], "pid": os.getpid()}


def key_or_bad(raw):
    """Every shard's fourth sample ('..._3') is a bad sample: exercises the bad counter on resume."""
    if raw["__key__"].endswith("_3"):
        raise BadSample("marked bad by the test")
    return {"key": raw["__key__"], "pid": os.getpid()}


class Keyed:
    """The real SampleEncoder, with the sample's key added so tests can tell samples apart."""

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, raw):
        return dict(self.encoder(raw), key=raw["__key__"])


def key_in_parts(raw):
    """Sample '<prefix><shard>_<j>' as 1 + j % 3 examples (as LSG splits a conversation into turns)."""
    parts = 1 + int(raw["__key__"].rsplit("_", 1)[1]) % 3
    return [{"key": raw["__key__"], "piece": piece} for piece in range(parts)]


def always_bad(raw):
    raise BadSample("does not fit the template")


# --- samples and shards ------------------------------------------------------------------------


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


# --- a whole job's micro-batches ----------------------------------------------------------------


def job_batches(shards, decode, world_size, num_workers, count, resume=None, **settings):
    """The job's first ``count`` micro-batches in its global order (micro-batch g = k * W + r is
    rank r's k-th), each rank read through a real DataLoader with ``num_workers`` processes."""
    from torch.utils.data import DataLoader

    from sinktrain.data.stream import ShardStream

    micro_batch, per_rank = settings.pop("micro_batch", 1), count // world_size
    ranks = []
    for rank in range(world_size):
        stream = ShardStream(shards, decode, rank, world_size, num_workers, resume=resume, micro_batch=micro_batch, **settings)
        loader = DataLoader(stream, batch_size=micro_batch, num_workers=num_workers, collate_fn=list)
        ranks.append(list(islice(loader, per_rank)))
    return [ranks[rank][k] for k in range(per_rank) for rank in range(world_size)]


def keys_of(batches):
    return [[s["key"] for s in batch] for batch in batches]


def key_in_parts_or_bad(raw):
    """key_or_bad's bad samples, and key_in_parts' examples for the others."""
    key_or_bad(raw)
    return key_in_parts(raw)


def recorded_state(batches, lanes, micro_batch):
    """The StreamState the training loop records after consuming ``batches`` (the job's first ones),
    merged over ranks and sent through JSON as a checkpoint stores it."""
    import json

    from sinktrain.data.stream_state import StreamState

    state = StreamState(lanes, micro_batch, micro_batches=len(batches))
    for sample in (s for batch in batches for s in batch):
        state.update(sample["lane"], sample["index"], sample["bad"], sample["part"], sample["parts"])
    return StreamState.from_dict(json.loads(json.dumps(state.to_dict())))
