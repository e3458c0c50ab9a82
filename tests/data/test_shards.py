"""Shard writing: real tar shards read back with webdataset, and tools/make_shards.py end to end.

    python -m pytest tests/data/test_shards.py -q
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from sinktrain.data.scenes import demo_samples
from sinktrain.data.shards import (
    ReadStats,
    llava_json_samples,
    shard_key,
    write_demo_shards,
    write_shards,
)
from sinktrain.errors import SinkTrainError

REPO = Path(__file__).resolve().parents[2]


def read_back(paths) -> list[dict]:
    return list(wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False))


def image_bytes(fmt: str, colour=(200, 20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def conversation(question="<image>\nWhat is it?", reply="red"):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": reply}]


def test_shards_round_trip_records_and_exact_image_bytes(tmp_path):
    samples = [(r, png, None if png is None else "png") for r, png in demo_samples(12, seed=0)]
    jpeg = image_bytes("JPEG")
    samples.append(({"id": "coco/0001.jpg", "image": "x.JPG", "conversations": conversation()},
                    jpeg, "JPG"))
    samples.append(({"id": "txt", "conversations": conversation("Hi?", "Hello.")}, None, None))

    paths = write_shards(iter(samples), str(tmp_path / "out" / "%06d.tar"), 5)

    assert [os.path.basename(p) for p in paths] == ["000000.tar", "000001.tar", "000002.tar"]
    back = read_back(paths)
    assert len(back) == len(samples)
    for (record, image, ext), sample in zip(samples, back):
        assert json.loads(sample["json"]) == record
        assert "." not in sample["__key__"] and "/" not in sample["__key__"]
        members = set(sample) - {"__key__", "__url__", "__local_path__", "json"}
        if image is None:
            assert members == set()
        else:
            assert members == {ext.lower()} and sample[ext.lower()] == image
    assert back[-2]["__key__"] == "coco_0001_jpg"
    assert sorted(os.listdir(tmp_path / "out")) == ["000000.tar", "000001.tar", "000002.tar"]


def test_colliding_ids_get_distinct_keys(tmp_path):
    ids = ("a.b", "a_b", "a.b", "a_b_1")
    records = [{"id": i, "conversations": conversation("Q?", "A.")} for i in ids]
    paths = write_shards(((r, None, None) for r in records), str(tmp_path / "%03d.tar"))
    keys = [s["__key__"] for s in read_back(paths)]
    assert keys == ["a_b", "a_b_1", "a_b_2", "a_b_1_1"]
    assert shard_key("llava/img 1.png") == "llava_img_1_png"


@pytest.mark.parametrize("pattern", ["out/shard.tar", "out/%s-%s.tar", "out/%03d/x.tar"])
def test_pattern_without_shard_number_is_refused(tmp_path, pattern):
    with pytest.raises(SinkTrainError, match="%06d"):
        write_shards([], str(tmp_path / pattern))


def test_failed_write_leaves_nothing_behind(tmp_path):
    def samples():
        for record, png in demo_samples(8, seed=0):
            yield record, png, "png" if png else None
        raise SinkTrainError("input went bad")

    with pytest.raises(SinkTrainError, match="input went bad"):
        write_shards(samples(), str(tmp_path / "s" / "%06d.tar"), max_samples_per_shard=3)
    assert os.listdir(tmp_path / "s") == []
    with pytest.raises(SinkTrainError, match="no samples"):
        write_shards([], str(tmp_path / "s" / "%06d.tar"))


def test_demo_shards_are_even_complete_and_replace_old_ones(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "stale.tar").write_bytes(b"old")

    paths = write_demo_shards(str(out), num_samples=10, num_shards=4, seed=5)

    assert sorted(os.listdir(out)) == [f"demo-{i:06d}.tar" for i in range(4)]
    assert os.listdir(tmp_path) == ["demo"]  # no building/old directories left
    sizes = [len(read_back([p])) for p in paths]
    assert sizes == [3, 3, 2, 2]
    back = read_back(paths)
    expected = list(demo_samples(10, seed=5))
    assert [json.loads(s["json"]) for s in back] == [r for r, _ in expected]
    assert [s.get("png") for s in back] == [png for _, png in expected]
    with pytest.raises(SinkTrainError, match="at least as many samples"):
        write_demo_shards(str(out), num_samples=2, num_shards=3, seed=0)


def test_llava_json_validation_and_image_token_fixup(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    records = [
        {"id": "no-token", "image": "a.png", "conversations": conversation("What?", "x")},
        {"id": "text", "conversations": conversation("Hi?", "Hello.")},
        {"id": "missing", "image": "nope.png", "conversations": conversation()},
        {"id": "broken", "image": "broken.jpg", "conversations": conversation()},
        {"id": "order", "conversations": conversation()[::-1]},
        {"id": "dangling", "image": "a.png", "conversations": conversation()[:1]},
        {"id": "token-no-image", "conversations": conversation()},
        {"id": "two-tokens", "image": "a.png", "conversations": conversation("<image><image>Q")},
        {"id": "no-turns", "image": "a.png"},
    ]
    (tmp_path / "data.json").write_text(json.dumps(records))
    stats = ReadStats()

    kept = list(llava_json_samples(str(tmp_path / "data.json"), str(tmp_path), stats))

    assert [r["id"] for r, _, _ in kept] == ["no-token", "text"]
    assert kept[0][0]["conversations"][0]["value"] == "<image>\nWhat?"
    assert kept[0][1] == (tmp_path / "a.png").read_bytes() and kept[0][2] == "png"
    assert kept[1][1:] == (None, None)
    assert (stats.total, stats.kept, stats.num_skipped) == (9, 2, 7)
    assert stats.skipped == {"missing image": 1, "unreadable image": 1, "invalid record": 5}
    assert stats.examples["missing image"] == ["missing"]


def test_odd_image_suffix_is_stored_under_its_real_format(tmp_path):
    (tmp_path / "photo.jfif").write_bytes(image_bytes("JPEG"))
    (tmp_path / "noext").write_bytes(image_bytes("PNG"))
    names = ("photo.jfif", "noext")
    records = [{"id": n, "image": n, "conversations": conversation()} for n in names]
    (tmp_path / "d.json").write_text(json.dumps(records))
    kept = list(llava_json_samples(str(tmp_path / "d.json"), str(tmp_path)))
    assert [ext for _, _, ext in kept] == ["jpg", "png"]
    with pytest.raises(SinkTrainError, match="extension 'svg'"):
        write_shards([(records[0], b"<svg/>", "svg")], str(tmp_path / "s" / "%06d.tar"))


def test_image_lists_are_validated_and_one_image_stays_plain(tmp_path):
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG")):
        (tmp_path / name).write_bytes(image_bytes(fmt))
    two = conversation("<image>\n<image>\nSame?")
    records = [
        {"id": "two", "image": ["a.png", "b.jpg"], "conversations": two},
        {"id": "one", "image": ["b.jpg"], "conversations": conversation("What?", "x")},  # LLaVA's fix-up
        {"id": "markers1", "image": ["a.png", "b.jpg"], "conversations": conversation()},
        {"id": "markers0", "image": ["a.png", "b.jpg"], "conversations": conversation("Same?")},
        {"id": "markers3", "image": ["a.png", "b.jpg"], "conversations": conversation("<image>" * 3)},
        {"id": "gone", "image": ["a.png", "nope.png"], "conversations": two},
        {"id": "empty", "image": [], "conversations": conversation("Hi?")},
        {"id": "notpath", "image": ["a.png", 7], "conversations": two},
    ]
    (tmp_path / "d.json").write_text(json.dumps(records))
    stats = ReadStats()

    kept = list(llava_json_samples(str(tmp_path / "d.json"), str(tmp_path), stats))

    assert [r["id"] for r, _, _ in kept] == ["two", "one"]
    assert kept[0][1:] == ([(tmp_path / "a.png").read_bytes(), (tmp_path / "b.jpg").read_bytes()], ["png", "jpg"])
    assert kept[1][0]["conversations"][0]["value"] == "<image>\nWhat?"
    assert stats.skipped == {"invalid record": 5, "missing image": 1}
    paths = write_shards(kept, str(tmp_path / "s" / "%06d.tar"))
    two_back, one_back = read_back(paths)
    assert set(two_back) - {"__key__", "__url__", "__local_path__", "json"} == {"0.png", "1.jpg"}
    assert two_back["0.png"] == kept[0][1][0] and two_back["1.jpg"] == kept[0][1][1]
    assert set(one_back) - {"__key__", "__url__", "__local_path__", "json"} == {"jpg"}  # as a single image
    with pytest.raises(SinkTrainError, match="as many extensions"):
        write_shards([(records[0], kept[0][1], "png")], str(tmp_path / "t" / "%06d.tar"))


def make_llava_dir(tmp_path: Path, missing: int = 1) -> Path:
    """A small LLaVA-style dataset: 4 images (jpg, PNG), one text-only, `missing` absent images."""
    images = tmp_path / "images" / "coco"
    images.mkdir(parents=True)
    records = []
    for i in range(4):
        name = f"img{i}.jpg" if i % 2 else f"img{i}.PNG"
        (images / name).write_bytes(image_bytes("JPEG" if i % 2 else "PNG", (i * 40, 0, 0)))
        records.append({"id": f"im.{i}", "image": f"coco/{name}", "conversations": conversation()})
    records.append({"id": "chat", "conversations": conversation("Hi?", "Hello.")})
    for i in range(missing):
        records.append({"id": f"gone{i}", "image": f"coco/gone{i}.jpg",
                        "conversations": conversation()})
    (tmp_path / "data.json").write_text(json.dumps(records))
    return tmp_path


def make_shards(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/make_shards.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def test_make_shards_writes_shards_and_reports_skips(tmp_path):
    root = make_llava_dir(tmp_path)
    out = tmp_path / "shards" / "%06d.tar"
    result = make_shards("--json", str(root / "data.json"), "--image_folder", str(root / "images"),
                         "--out", str(out), "--max_samples_per_shard", "2",
                         "--max_bad_fraction", "0.2")

    assert result.returncode == 0, result.stderr
    assert "wrote 5 samples to 3 shards" in result.stdout
    assert "missing image: 1 (e.g. gone0)" in result.stdout
    assert "gone0" in result.stderr  # the log names the skipped record
    shards = sorted((tmp_path / "shards").iterdir())
    assert len(shards) == 3
    back = read_back(shards)
    assert [json.loads(s["json"])["id"] for s in back] == ["im.0", "im.1", "im.2", "im.3", "chat"]
    assert back[0]["png"] == (root / "images" / "coco" / "img0.PNG").read_bytes()
    assert back[1]["jpg"] == (root / "images" / "coco" / "img1.jpg").read_bytes()
    assert set(back[4]) - {"__url__", "__local_path__"} == {"__key__", "json"}


def test_make_shards_writes_image_lists_as_indexed_members(tmp_path):
    root = make_llava_dir(tmp_path, missing=0)
    records = json.loads((root / "data.json").read_text())
    coco = root / "images" / "coco"
    records += [
        {"id": "pair", "image": ["coco/img1.jpg", "coco/img0.PNG"], "conversations": conversation("<image>\n<image>\nQ?")},
        {"id": "triple", "image": ["coco/img2.PNG", "coco/img3.jpg", "coco/img1.jpg"],
         "conversations": conversation("<image> <image>\nQ?", "A.") + conversation("<image>\nAnd?", "B.")},
        {"id": "miscount", "image": ["coco/img1.jpg", "coco/img0.PNG"], "conversations": conversation()},
    ]
    (root / "data.json").write_text(json.dumps(records))
    result = make_shards("--json", str(root / "data.json"), "--image_folder", str(root / "images"),
                         "--out", str(tmp_path / "shards" / "%06d.tar"), "--max_bad_fraction", "0.2")

    assert result.returncode == 0, result.stderr
    assert "wrote 7 samples" in result.stdout and "invalid record: 1 (e.g. miscount)" in result.stdout
    back = {s["__key__"]: s for s in read_back(sorted((tmp_path / "shards").iterdir()))}
    pair, triple = back["pair"], back["triple"]
    assert (pair["0.jpg"], pair["1.png"]) == ((coco / "img1.jpg").read_bytes(), (coco / "img0.PNG").read_bytes())
    assert [triple[f] for f in ("0.png", "1.jpg", "2.jpg")] == [
        (coco / name).read_bytes() for name in ("img2.PNG", "img3.jpg", "img1.jpg")
    ]
    assert json.loads(triple["json"])["image"] == records[-2]["image"]
    assert "png" in back["im_0"] and not any("." in field for field in back["im_0"] if not field.startswith("__"))


def test_make_shards_fails_clearly_on_bad_json(tmp_path):
    (tmp_path / "bad.json").write_text("[{not json")
    result = make_shards("--json", str(tmp_path / "bad.json"), "--image_folder", str(tmp_path),
                         "--out", str(tmp_path / "s" / "%06d.tar"))
    assert result.returncode != 0
    assert "cannot parse" in result.stderr and "Traceback" not in result.stderr

    result = make_shards("--json", str(tmp_path / "absent.json"), "--image_folder", str(tmp_path),
                         "--out", str(tmp_path / "s" / "%06d.tar"))
    assert result.returncode != 0 and "not found" in result.stderr

    result = make_shards("--json", str(tmp_path / "bad.json"), "--image_folder", str(tmp_path),
                         "--out", str(tmp_path / "s.tar"))
    assert result.returncode != 0 and "no usable % shard number" in result.stderr


def test_make_shards_fails_on_too_many_bad_records_and_writes_nothing(tmp_path):
    root = make_llava_dir(tmp_path, missing=2)
    result = make_shards("--json", str(root / "data.json"), "--image_folder", str(root / "images"),
                         "--out", str(tmp_path / "shards" / "%06d.tar"))
    assert result.returncode != 0
    assert "--max_bad_fraction" in result.stderr and "missing image" in result.stderr
    assert not list((tmp_path / "shards").glob("*.tar"))
