"""Category-balanced subsets (sinktrain.data.balance) of shards and, through tools/make_shards.py
--balance_by, of a LLaVA JSON: every category gives the same number of samples, drawn
reproducibly from the seed, with their bytes; bad requests fail with the fix."""

import json
import tarfile

import pytest

from scripts import load_script
from sinktrain.data.balance import shard_samples, write_balanced
from sinktrain.data.scenes import demo_samples
from sinktrain.data.shards import write_shards
from sinktrain.errors import SinkTrainError

SIZES = {"local": 9, "global": 6, "mixed": 4}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("unbalanced")
    generated = [(record, png) for record, png in demo_samples(40, seed=3) if png is not None]
    samples, k = [], 0
    for category, size in SIZES.items():
        for _ in range(size):
            record, png = generated[k]
            samples.append(({**record, "id": f"s{k:03d}", "task": category}, png, "png"))
            k += 1
    return write_shards(iter(samples), str(root / "%06d.tar"), 7)


def categories(paths) -> list[str]:
    return [json.loads(fields["json"])["task"] for path in paths for _, fields in shard_samples(path)]


def test_every_category_gives_as_many_as_the_smallest(shards, tmp_path):
    paths = write_balanced(shards, "task", None, seed=0, out_dir=tmp_path / "a", num_shards=3)
    assert len(paths) == 3 and sorted(categories(paths)) == sorted(["local", "global", "mixed"] * 4)
    with tarfile.open(paths[0]) as tar:
        assert any(name.endswith(".png") for name in tar.getnames())  # images travel with their records


def test_the_seed_decides_and_reruns_reuse(shards, tmp_path):
    first = write_balanced(shards, "task", 3, seed=0, out_dir=tmp_path / "a", num_shards=2)
    again = write_balanced(shards, "task", 3, seed=0, out_dir=tmp_path / "b", num_shards=2)
    other = write_balanced(shards, "task", 3, seed=1, out_dir=tmp_path / "c", num_shards=2)
    read = lambda paths: [open(p, "rb").read() for p in paths]  # noqa: E731
    assert read(first) == read(again) and read(first) != read(other)
    stamp = (tmp_path / "a" / "balanced-000000.tar").stat().st_mtime_ns
    write_balanced(shards, "task", 3, seed=0, out_dir=tmp_path / "a", num_shards=2)  # same settings: kept
    assert (tmp_path / "a" / "balanced-000000.tar").stat().st_mtime_ns == stamp


def test_bad_requests(shards, tmp_path):
    with pytest.raises(SinkTrainError, match=r"sample s000 of .* has no 'difficulty' field, but --balance_by difficulty"):
        write_balanced(shards, "difficulty", None, 0, tmp_path / "x", 1)
    with pytest.raises(SinkTrainError, match=r"--per_category 5: the smallest category has 4 samples \(global 6, local 9, mixed 4\)"):
        write_balanced(shards, "task", 5, 0, tmp_path / "y", 1)


# -- tools/make_shards.py --balance_by: the stratified draw from a LLaVA JSON ----------------------


def make_shards_tool():
    return load_script("tools/make_shards.py")


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    """A LLaVA JSON of 15 image records in three categories (ocr 4, math 6, count 5) and their images."""
    root = tmp_path_factory.mktemp("llava")
    (root / "images").mkdir()
    pngs = [png for _, png in demo_samples(60, seed=4) if png is not None]
    records = []
    for index, category in enumerate(["ocr"] * 4 + ["math"] * 6 + ["count"] * 5):
        (root / "images" / f"{index}.png").write_bytes(pngs[index])
        records.append({"id": f"r{index:02d}", "image": f"{index}.png", "category": category,
                        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "this"}]})
    (root / "data.json").write_text(json.dumps(records))
    return root


def drawn(tool, llava_dir, out, *flags) -> list[str]:
    argv = ["--json", str(llava_dir / "data.json"), "--image_folder", str(llava_dir / "images"), "--out", str(out / "%06d.tar"), *flags]
    assert tool.main(argv) == 0
    return [key for path in sorted(out.iterdir()) for key, _ in shard_samples(str(path))]


def test_make_shards_draws_the_same_number_per_category_from_the_seed(llava_dir, tmp_path, capsys):
    tool = make_shards_tool()
    first = drawn(tool, llava_dir, tmp_path / "a", "--balance_by", "category", "--per_category", "3", "--seed", "1")
    assert "per category: count 3, math 3, ocr 3" in capsys.readouterr().out
    ids = [json.loads(fields["json"])["category"] for path in sorted((tmp_path / "a").iterdir()) for _, fields in shard_samples(str(path))]
    assert sorted(ids) == ["count"] * 3 + ["math"] * 3 + ["ocr"] * 3 and ids != sorted(ids)  # shuffled, not grouped
    assert drawn(tool, llava_dir, tmp_path / "b", "--balance_by", "category", "--per_category", "3", "--seed", "1") == first
    assert drawn(tool, llava_dir, tmp_path / "c", "--balance_by", "category", "--per_category", "3", "--seed", "2") != first
    assert len(drawn(tool, llava_dir, tmp_path / "d", "--balance_by", "category")) == 12  # the smallest category's 4 each


def test_make_shards_balance_errors(llava_dir, tmp_path, capsys):
    tool = make_shards_tool()
    common = ["--json", str(llava_dir / "data.json"), "--image_folder", str(llava_dir / "images"), "--out", str(tmp_path / "x" / "%06d.tar")]
    assert tool.main([*common, "--balance_by", "source"]) == 1
    assert "record r00 of" in capsys.readouterr().err
    assert tool.main([*common, "--balance_by", "category", "--per_category", "5"]) == 1
    assert "the smallest category has 4 samples (count 5, math 6, ocr 4)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        tool.main([*common, "--per_category", "3"])
    assert "--per_category needs --balance_by" in capsys.readouterr().err
