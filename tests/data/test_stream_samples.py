"""The shard stream end to end, part 2: real tar shards, real DataLoader worker processes, the real
demo tokenizer and image processor. Covers broken and over-long samples,
the bad-sample budget and the collator. (The global order, exact resume and clear errors:
test_stream_order.py, test_stream_resume.py.)

    python -m pytest tests/data/test_stream_samples.py -q
"""

import io
import json
import logging
from itertools import islice

import pytest
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader
from transformers import AutoProcessor

from sinktrain.backbones.llava import SquareImageInputs
from sinktrain.data.chat import encode_prompt
from sinktrain.data.collate import Collator
from sinktrain.data.encode import SampleEncoder, decode_image
from sinktrain.data.shards import write_shards
from sinktrain.data.stream import ShardStream
from sinktrain.errors import SinkTrainError
from sinktrain.train.loop import check_bad_fraction
from stream_helpers import Keyed, always_bad, chat, png, write_sized

M = -100  # IGNORE_INDEX, written out so a change there fails these tests


# --- 2. broken and over-long samples with the real encoder -------------------------------------


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


def image_inputs(processor, num_image_tokens):
    return SquareImageInputs(processor.image_processor, num_image_tokens)


def encoder(processor, num_image_tokens, max_length):
    tokenizer = processor.tokenizer
    return SampleEncoder(
        tokenizer, image_inputs(processor, num_image_tokens), "v1",
        tokenizer.convert_tokens_to_ids("<image>"), max_length,
    )


def first_target(labels) -> int:
    return next(i for i, label in enumerate(labels.tolist()) if label != M)


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
        assert s["images"] == (s["key"] != "txt")
        assert image_tokens == num_image_tokens * s["images"]
        if s["images"]:
            assert set(s["vision"]) == {"pixel_values"} and s["vision"]["pixel_values"].shape == (1, 3, 64, 64)
        else:
            assert s["vision"] == {}  # text-only: no image tensors (the collator adds a blank per batch)
    assert next(iter(islice(iter(stream), 5, 6)))["bad"] == 3  # the next epoch starts with all counted

    messages = [r.getMessage() for r in sinktrain_warnings.records if r.levelno == logging.WARNING]
    assert any("corruptimg" in m and first in m and "undecodable image" in m for m in messages)
    assert any("badjson" in m and second in m and "no readable LLaVA record" in m for m in messages)
    assert any("truncated" in m and first in m and "undecodable image" in m for m in messages)


@pytest.mark.parametrize("mode, kind", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG")])
def test_images_decode_to_the_rgb_pixels_of_any_mode(mode, kind):
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((24, 16)).convert(mode).save(buffer, format=kind)
    decoded = decode_image(buffer.getvalue())  # an RGB image is not copied by a convert() to RGB
    assert decoded.mode == "RGB" and decoded.size == (24, 16)
    assert decoded.tobytes() == Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").tobytes()


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
    prompt = encode_prompt(chat("How many cats?", long_answer)[:1], tokenizer, "v1", image_id, [])
    assert text["input_ids"][: len(prompt)].tolist() == prompt  # the generation prompt is the exact prefix
    last_prompt_index = first_target(text["labels"]) - 1
    assert last_prompt_index == len(prompt) - 1  # ...and the labels start right after it
    assert last_prompt_index + 1 < max_length < len(text["input_ids"])  # ...inside the second's answer

    first, again = encoded(max_length)  # one epoch yields only the text sample; the next yields it again
    assert first["key"] == again["key"] == "longtext"
    assert (first["bad"], again["bad"]) == (1, 2)
    assert first["input_ids"].tolist() == text["input_ids"][:max_length].tolist()
    assert first["labels"].tolist() == text["labels"][:max_length].tolist()
    assert first_target(first["labels"]) == last_prompt_index + 1
    labels, ids = first["labels"].tolist(), first["input_ids"].tolist()
    assert len(labels) == len(ids) == max_length
    assert all(lab in (M, i) for lab, i in zip(labels, ids)) and labels[-1] == ids[-1] != M
    assert labels[: last_prompt_index + 1] == [M] * (last_prompt_index + 1)
    messages = [r.getMessage() for r in sinktrain_warnings.records]
    assert any("withimage" in m and shard in m and f"--max_length {max_length}" in m for m in messages)


# --- 3. the broken-sample budget -----------------------------------------------------------------


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


def test_a_reader_whose_samples_are_all_unusable_fails_instead_of_spinning(tmp_path, monkeypatch):
    import sinktrain.data.stream as stream_module

    monkeypatch.setattr(stream_module, "MAX_BAD_IN_A_ROW", 5)  # a smaller bound, same mechanism
    shards, _ = write_sized(tmp_path, [4, 4])
    stream = ShardStream(shards, always_bad, rank=0, world_size=1, num_workers=1)
    with pytest.raises(SinkTrainError, match="the last 5 samples were all unusable"):
        next(iter(stream))


# --- 4. the collator with worker processes (hand-made samples, real models: test_collate.py) ----


@pytest.mark.timeout(300)  # a hang guard, not a timing check: generous for a loaded machine
def test_collated_batches_from_worker_processes(tmp_path, processor, num_image_tokens):
    question = "<image>\nWhat is in the image?"
    samples = [({"id": f"i{i}", "conversations": chat(question, "A cube." * (i + 1))}, png(), "png") for i in range(3)]
    samples += [({"id": f"t{i}", "conversations": chat("Hi?", "Hello." * (i + 1))}, None, None) for i in range(3)]
    shards = write_shards(samples, str(tmp_path / "%06d.tar"), 3)
    pad = processor.tokenizer.pad_token_id
    stream = ShardStream(shards, encoder(processor, num_image_tokens, 512), rank=0, world_size=1, num_workers=2,
                         micro_batch=3)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    collate = Collator(pad, image_id, image_inputs(processor, num_image_tokens).blank())
    loader = DataLoader(stream, batch_size=3, num_workers=2, collate_fn=collate)
    kinds = []
    for batch, positions in islice(loader, 4):  # each lane (3 samples) is one shard
        lengths = batch.attention_mask.sum(1)
        assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
        assert len({position[0] for position in positions}) == 1 and len(positions) == 3  # one lane per batch
        blank = not batch.has_image.any()
        kinds.append(blank)
        assert batch.images_per_sample.tolist() == [0 if blank else 1] * 3
        assert batch.vision["pixel_values"].shape == (1 if blank else 3, 3, 64, 64)
        assert batch.input_ids.shape[1] == max(lengths.max(), lengths[0] + num_image_tokens * blank)
        for row, length in enumerate(lengths.tolist()):
            real, tail = batch.input_ids[row, :length], batch.input_ids[row, length:]
            assert batch.attention_mask[row, :length].eq(1).all() and batch.labels[row, length:].eq(M).all()
            assert not real.eq(pad).any() and int(real.eq(image_id).sum()) == num_image_tokens * (not blank)
            if blank and row == 0:  # the blank image's slots, then padding
                assert tail[:num_image_tokens].eq(image_id).all() and tail[num_image_tokens:].eq(pad).all()
            else:
                assert tail.eq(pad).all()
    assert sorted(kinds) == [False, False, True, True]
