"""Smoke test of tools/bench_data.py at toy sizes: it builds its data set, runs both loaders at every
worker count, stays quiet and writes every number. No timing checks (targets are reported, not asserted)."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from console import check_quiet
from stream_helpers import write_sized

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench_data.py"
WORKERS = ("1", "2")
TINY = [
    "--samples", "40", "--image_size", "56", "--samples_per_shard", "16", "--workers", ",".join(WORKERS),
    "--batch", "2", "--batches", "4", "--warmup", "1", "--rounds", "2", "--turns", "3",
]


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def check_report(report: dict) -> None:
    assert report["data"]["samples"] == 40 and report["data"]["shard_files"] == 3  # 16 + 16 + 8
    assert set(report["workers"]) == set(report["ratios"]) == set(WORKERS)
    for workers, row in report["workers"].items():
        for key in ("stream_samples_per_s", "map_samples_per_s", "ratio", "cpu_ratio", "stream_first_batch_s",
                    "map_first_batch_s", "stream_cpu_ms_per_sample", "map_cpu_ms_per_sample"):
            assert positive(row[key]), (workers, key, row)
        assert row["stream_page_faults_per_sample"] >= 0 and row["map_page_faults_per_sample"] >= 0, row
        assert len(row["stream_samples"]) == len(row["map_samples"]) == 2, row  # one per round
        assert all(positive(value) for value in row["stream_samples"] + row["map_samples"]), row
        assert row["ratio"] == report["ratios"][workers]
    work = report["work_in_turns"]
    assert work["batches"] == 3 and all(positive(work[key]) for key in ("ratio", "stream_cpu_ms_per_sample",
                                                                         "map_cpu_ms_per_sample")), work
    met = report["targets_met"]
    assert set(met) == {"ratio_at_least_1", "cpu_ratio_at_least_1", "work_ratio_at_least_1",
                        "stream_25_per_s_at_4_workers"}
    assert met["work_ratio_at_least_1"] == (work["ratio"] >= 1.0)
    assert report["targets_met"]["stream_25_per_s_at_4_workers"] is None  # 4 workers not measured here


def test_bench_data_writes_every_configuration(tmp_path):
    out = tmp_path / "data.json"
    command = [sys.executable, str(SCRIPT), *TINY, "--work_dir", str(tmp_path / "work"), "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    check_quiet(done.stdout + done.stderr)
    assert "WARNING" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert "ratio" in done.stdout and "target stream >= 1.0x map" in done.stdout, done.stdout
    assert "work per sample, the loaders' batches taken in turns in one process (3 each)" in done.stdout, done.stdout
    check_report(json.loads(out.read_text()))
    images = sorted((tmp_path / "work" / "images").iterdir())
    assert len(images) == 40 and images[0].read_bytes()[:2] == b"\xff\xd8"  # JPEGs, as LLaVA's folders hold


def test_map_loader_outlasts_the_timed_batches_and_their_prefetch():
    """The map-style loader must not run dry at the last timed batch: its workers would idle through the
    tail while the endless stream's still prefetch, which on oversubscribed cores favours the map loader."""
    from sinktrain.bench.data_loading import PREFETCH_FACTOR, make_loader

    dataset = list(range(10))  # 10 samples: fewer than the timed batches and their prefetch need
    loader = make_loader("map", {"dataset": dataset}, None, workers=2, batch=2, batches=6, seed=0)
    assert loader.prefetch_factor == PREFETCH_FACTOR
    assert len(loader.sampler) >= (6 + PREFETCH_FACTOR * 2) * 2


class SlowDataset:
    """A map-style data set whose every sample costs ``ms`` of CPU."""

    def __init__(self, ms: float):
        self.ms = ms

    def __len__(self) -> int:
        return 50

    def __getitem__(self, index: int) -> dict:
        start = time.process_time()
        while time.process_time() - start < self.ms / 1000:
            pass
        return {"index": index}


def test_work_in_turns_charges_each_loader_its_own_cost(tmp_path):
    from sinktrain.bench.data_loading import interleaved_work

    shards, _ = write_sized(tmp_path, [30, 30])
    sources = {"urls": shards, "sizes": [30, 30], "encoder": lambda raw: {"key": raw["__key__"]}, "shuffle_buffer": 8,
               "dataset": SlowDataset(ms=3.0)}
    threads = torch.get_num_threads()
    work = interleaved_work(sources, collator=lambda samples: samples, batch=4, batches=6, seed=0)
    assert work["batches"] == 6 and 2.9 <= work["map_cpu_ms_per_sample"] < 6
    assert work["stream_cpu_ms_per_sample"] < 1.0 and work["ratio"] > 3  # map / stream: > 1 means the stream is cheaper
    assert torch.get_num_threads() == threads  # one thread while measuring, as a worker; the caller's count after
