"""Category-balanced subsets of shards (sinktrain.data.balance): every category gives the same number
of samples, drawn reproducibly from the seed, with their bytes; bad requests fail with the fix."""

import json
import tarfile

import pytest

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
