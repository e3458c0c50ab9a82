"""Loading a benchmark's data: a local copy of the Hub repo, parquet files, a save_to_disk
directory, the split fallback, and clear errors for an unknown benchmark, a missing column, a
missing split and an unreadable source."""

import pytest
from datasets import Dataset, DatasetDict

from hub_data import write_hub_dataset
from sinktrain.benchmarks import BENCHMARKS, get_benchmark, load_rows
from sinktrain.errors import SinkTrainError
from test_mmstar import FEATURES, ROWS


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(SinkTrainError, match="unknown benchmark 'mmbench'; known: mmstar, cvbench, pope"):
        get_benchmark("mmbench")
    assert all(get_benchmark(name).name == name for name in BENCHMARKS)


def test_local_copy_parquet_files_and_save_to_disk_read_the_same_rows(tmp_path):
    bench = get_benchmark("mmstar")
    copy = write_hub_dataset(tmp_path / "MMStar", {"val": ROWS}, FEATURES)
    expected = [r["question"] for r in ROWS]
    assert load_rows(bench, str(copy))["question"] == expected
    assert load_rows(bench, str(copy / "default" / "*.parquet"))["question"] == expected
    Dataset.from_list(ROWS, features=FEATURES).save_to_disk(str(tmp_path / "saved"))
    assert load_rows(bench, str(tmp_path / "saved"))["question"] == expected
    assert load_rows(bench, str(copy), limit=2)["question"] == expected[:2]


def test_a_copy_with_one_split_under_another_name_is_used(tmp_path):
    copy = write_hub_dataset(tmp_path / "MMStar", {"train": ROWS}, FEATURES)
    assert len(load_rows(get_benchmark("mmstar"), str(copy))) == len(ROWS)


def test_a_missing_split_among_several_names_them(tmp_path):
    DatasetDict({"dev": Dataset.from_list(ROWS, features=FEATURES), "test": Dataset.from_list(ROWS, features=FEATURES)}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(SinkTrainError, match="has splits dev, test but not 'val'; pass --benchmark_split"):
        load_rows(get_benchmark("mmstar"), str(tmp_path / "two"))
    assert len(load_rows(get_benchmark("mmstar"), str(tmp_path / "two"), split="dev")) == len(ROWS)


def test_a_missing_column_is_named(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "l2_category"} for r in ROWS]
    features = FEATURES.copy()
    del features["l2_category"]
    copy = write_hub_dataset(tmp_path / "MMStar", {"val": rows}, features)
    with pytest.raises(SinkTrainError, match="has no column 'l2_category'; it needs index, question, image, answer, category, l2_category"):
        load_rows(get_benchmark("mmstar"), str(copy))


def test_unreadable_sources_say_how_to_point_at_a_local_copy(tmp_path):
    with pytest.raises(SinkTrainError, match="cannot load mmstar from .*huggingface-cli download Lin-Chen/MMStar"):
        load_rows(get_benchmark("mmstar"), str(tmp_path / "nowhere"))
    with pytest.raises(SinkTrainError, match="--limit 0"):
        load_rows(get_benchmark("mmstar"), str(tmp_path), limit=0)


def test_two_local_copies_with_the_same_name_keep_their_own_rows(tmp_path):
    """datasets alone would read the second from the first's cache (same folder name and layout)."""
    bench = get_benchmark("mmstar")
    first = write_hub_dataset(tmp_path / "a" / "MMStar", {"val": ROWS}, FEATURES)
    second = write_hub_dataset(tmp_path / "b" / "MMStar", {"val": ROWS[:3]}, FEATURES)
    assert (len(load_rows(bench, str(first))), len(load_rows(bench, str(second)))) == (len(ROWS), 3)
