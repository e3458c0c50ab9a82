"""Multi-image samples end to end: real tar shards with <key>.0.<ext>, <key>.1.<ext>, ... members,
the shard stream and the real Qwen2-VL demo encoder (LLaVA's v1 format takes one image), broken
layouts and marker/image count mismatches skipped and counted, and the multi-image demo set.

    python -m pytest tests/data/test_multi_image.py -q
"""

import hashlib
import io
import json
import logging
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from sinktrain.backbones.registry import load_backbone
from sinktrain.data.multi_scenes import multi_image_samples
from sinktrain.data.shards import write_shards
from sinktrain.data.stream import ShardStream, expand_shards
from sinktrain.demo import ensure_demo_model
from sinktrain.demo.data import MULTI_SAMPLES, demo_multi_image_pattern
from stream_helpers import Keyed, chat, png
from test_scenes import measure  # reads a scene back from its pixels alone

# Sizes whose slot counts on the demo Qwen2-VL differ (16, 36, 28), so a swapped order shows.
SIZES = [(56, 56), (96, 96), (112, 56)]
RED, GREEN, BLUE = (200, 30, 30), (30, 160, 40), (30, 70, 220)


@pytest.fixture(scope="module")
def qwen(one_thread):
    return load_backbone(str(ensure_demo_model("qwen2_vl")))


def jpeg(size, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def fields(raw: dict) -> set[str]:
    return set(raw) - {"__key__", "__url__", "__local_path__", "json"}


def read_raw(paths) -> list[dict]:
    return list(wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False))


def stream_of(shards, qwen, count: int) -> list[dict]:
    """One pass (`count` usable samples) through the real stream and the Qwen encoder, in shard order."""
    stream = ShardStream(shards, Keyed(qwen.encoder(max_length=4096)), rank=0, world_size=1, num_workers=1,
                         shuffle_buffer=1)
    return list(islice(iter(stream), count))


def image_runs(ids: torch.Tensor, tokenizer) -> list[int]:
    """Lengths of the <|image_pad|> runs between <|vision_start|> and <|vision_end|>, in order."""
    start, end, pad = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"])
    runs, inside = [], False
    for token in ids.tolist():
        if token == start:
            runs, inside = runs + [0], True
        elif token == end:
            inside = False
        elif inside:
            assert token == pad, "only image slots between vision_start and vision_end"
            runs[-1] += 1
    return runs


def expected_vision(qwen, images: list[bytes]):
    """Each image processed on its own, concatenated: what the encoder must give for them in order."""
    parts = [qwen.image_inputs([Image.open(io.BytesIO(data)).convert("RGB")]) for data in images]
    vision = {name: torch.cat([part[0][name] for part in parts]) for name in parts[0][0]}
    return vision, [part[1][0] for part in parts]


def test_multi_image_shards_round_trip_through_the_stream_and_the_qwen_encoder(tmp_path, qwen):
    two = [png(SIZES[0], RED), jpeg(SIZES[1], GREEN)]
    three = [png(SIZES[2], BLUE), png(SIZES[0], GREEN), jpeg(SIZES[1], RED)]
    turns3 = chat("<image>\n<image>\nCompare the two.", "Same size.") + chat("<image>\nAnd this one?", "Larger.")
    samples = [
        ({"id": "two", "conversations": chat("<image>\n<image>\nWhich one is red?", "The first.")}, two, ["png", "JPG"]),
        ({"id": "three", "conversations": turns3}, three, ["png", "png", "jpg"]),
        ({"id": "listofone", "conversations": chat("<image>\nColour?", "Blue.")}, [three[0]], ["png"]),
        ({"id": "single", "conversations": chat("<image>\nColour?", "Red.")}, two[0], "png"),
        ({"id": "text", "conversations": chat("Hi?", "Hello.")}, None, None),
    ]
    shards = write_shards(samples, str(tmp_path / "%06d.tar"), 3)

    raw = {r["__key__"]: r for r in read_raw(shards)}
    assert fields(raw["two"]) == {"0.png", "1.jpg"} and [raw["two"]["0.png"], raw["two"]["1.jpg"]] == two
    assert fields(raw["three"]) == {"0.png", "1.png", "2.jpg"} and raw["three"]["2.jpg"] == three[2]
    assert fields(raw["listofone"]) == {"png"} and fields(raw["single"]) == {"png"}  # one image stays plain
    assert fields(raw["text"]) == set()

    encoded = {s["key"]: s for s in stream_of(shards, qwen, len(samples))}
    assert sorted(encoded) == sorted(raw) and all(s["bad"] == 0 for s in encoded.values())
    for record, images, _ in samples:
        sample, images = encoded[record["id"]], [images] if isinstance(images, bytes) else images or []
        assert sample["images"] == len(images)
        if not images:
            assert sample["vision"] == {} and image_runs(sample["input_ids"], qwen.tokenizer) == []
            continue
        vision, slots = expected_vision(qwen, images)
        assert image_runs(sample["input_ids"], qwen.tokenizer) == slots  # each image's slots, in <image> order
        assert set(sample["vision"]) == set(vision)
        assert all(torch.equal(sample["vision"][name], vision[name]) for name in vision)
    assert image_runs(encoded["three"]["input_ids"], qwen.tokenizer) == [28, 16, 36]


def hand_written(path: Path, samples: list[dict]) -> str:
    """Samples write_shards would refuse to write (broken layouts), straight into a tar."""
    with wds.TarWriter(str(path)) as tar:
        for sample in samples:
            tar.write(sample)
    return str(path)


def raw_sample(key, question, images: dict) -> dict:
    record = {"id": key, "conversations": chat(question, "An answer.")}
    return {"__key__": key, "json": json.dumps(record).encode(), **images}


def test_mismatched_counts_and_broken_layouts_are_skipped_and_counted(tmp_path, qwen, sinktrain_warnings):
    q2, q1 = "<image>\n<image>\nWhich is red?", "<image>\nWhich is red?"
    a, b = png(SIZES[0], RED), png(SIZES[1], BLUE)
    first = write_shards([
        ({"id": "good2", "conversations": chat(q2, "The first.")}, [a, b], ["png", "png"]),
        ({"id": "markers2images1", "conversations": chat(q2, "The first.")}, a, "png"),
        ({"id": "markers1images2", "conversations": chat(q1, "The first.")}, [a, b], ["png", "png"]),
        ({"id": "text", "conversations": chat("Hi?", "Hello.")}, None, None),
    ], str(tmp_path / "a-%06d.tar"), 10)[0]
    second = hand_written(tmp_path / "b-000000.tar", [
        raw_sample("mixed", q2, {"png": a, "1.png": b}),
        raw_sample("gap", q2, {"0.png": a, "2.png": b}),
        raw_sample("twice", q2, {"0.png": a, "0.jpg": b, "1.png": b}),
        raw_sample("brokensecond", q2, {"0.png": a, "1.png": b[:40]}),
        raw_sample("good3", "<image>\n" * 3 + "Which is red?", {"0.png": a, "1.png": b, "2.png": a}),
    ])

    samples = stream_of([first, second], qwen, 3)  # one pass (in a seeded shard order): 9 raw samples, 6 bad

    assert sorted((s["key"], s["images"]) for s in samples) == [("good2", 2), ("good3", 3), ("text", 0)]
    skipped = set(range(9)) - {s["index"] for s in samples}
    assert len(skipped) == 6
    assert all(s["bad"] == sum(i < s["index"] for i in skipped) for s in samples)  # counted, not crashed
    messages = [r.getMessage() for r in sinktrain_warnings.records if r.levelno == logging.WARNING]
    reasons = {
        "markers2images1": "2 <image> marker(s) but the sample has 1 image(s)",
        "markers1images2": "1 <image> marker(s) but the sample has 2 image(s)",
        "mixed": "mixes a plain image member (png) with indexed ones (1.png)",
        "gap": "image members 0.png, 2.png have no image 1",
        "twice": "two image members for image 0",
        "brokensecond": "undecodable image 1.png",
    }
    for key, reason in reasons.items():
        assert any(f"bad sample {key} " in m and reason in m for m in messages), (key, messages)
    assert all("<key>.0.<ext>, <key>.1.<ext>" in m for m in messages if "image member" in m)  # says how to fix


# --- the multi-image demo set -------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_multi_shards() -> list[str]:
    return expand_shards(demo_multi_image_pattern())


def digests(paths) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def test_multi_image_demo_set_is_reproducible(demo_multi_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("SINKTRAIN_CACHE", str(tmp_path))  # a second, independent build
    again = expand_shards(demo_multi_image_pattern())
    assert [Path(p).name for p in again] == [Path(p).name for p in demo_multi_shards] == ["demo-000000.tar", "demo-000001.tar"]
    assert digests(again) == digests(demo_multi_shards)
    assert str(tmp_path) in again[0] and str(tmp_path) not in demo_multi_shards[0]


def test_multi_image_demo_set_holds_all_kinds_and_every_sample_encodes(demo_multi_shards, qwen):
    raw = read_raw(demo_multi_shards)
    assert len(raw) == MULTI_SAMPLES
    kinds = Counter()
    encoder = qwen.encoder()
    for sample in raw:
        record, members = json.loads(sample["json"]), fields(sample)
        count = len(members)
        kinds[count] += 1
        markers = record["conversations"][0]["value"].count("<image>")
        assert markers == count and all(t["value"].count("<image>") == 0 for t in record["conversations"][1:])
        if count > 1:
            assert members == {f"{i}.png" for i in range(count)}
            assert record["image"] == [f"{sample['__key__']}.{i}.png" for i in range(count)]
        encoded = encoder(sample)  # raises BadSample on anything the trainer would skip
        assert encoded["images"] == count
        assert len(image_runs(encoded["input_ids"], qwen.tokenizer)) == count
    assert set(kinds) == {0, 1, 2, 3}
    assert kinds[2] + kinds[3] > 0.7 * len(raw) and min(kinds[0], kinds[1]) >= 10  # mostly multi-image, a few of each other kind


ORDINALS = ["first", "second", "third"]  # written out, so a change in multi_scenes.py fails this test


def answer_from_pixels(question: str, category: str, pngs: list[bytes]) -> str:
    """The answer to a multi-image question, from the measured images alone."""
    seen = [measure(Image.open(io.BytesIO(data))) for data in pngs]
    counts = [scene.count for scene in seen]
    if category == "more":
        assert counts[0] != counts[1], "a tie has no answer"
        return ORDINALS[counts[1] > counts[0]]
    if category == "same_shape":
        return "yes" if seen[0].shape == seen[1].shape else "no"
    if category == "total":
        return str(sum(counts))
    if category == "nth_colour":
        return seen[next(i for i, word in enumerate(ORDINALS) if f" {word} " in question)].colour
    colour, shape = question.removeprefix("Which image shows ").removesuffix("s?").split()
    matches = [i for i, scene in enumerate(seen) if (scene.colour, scene.shape) == (colour, shape)]
    assert len(matches) == 1, f"{question} fits images {matches}"
    return ORDINALS[matches[0]]


def test_multi_image_answers_follow_from_the_pixels():
    categories = Counter()
    for record, images in multi_image_samples(120, seed=5):
        if not isinstance(images, list):
            continue
        question = record["conversations"][0]["value"]
        assert question.startswith("<image>\n" * len(images)) and question.count("<image>") == len(images)
        text = question.removeprefix("<image>\n" * len(images))
        assert record["conversations"][1]["value"] == answer_from_pixels(text, record["category"], images), record
        categories[record["category"]] += 1
    assert set(categories) == {"more", "same_shape", "find", "total", "nth_colour"}
