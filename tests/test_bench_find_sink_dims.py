"""Smoke test of tools/bench_find_sink_dims.py at toy sizes (its main, in this process; each memory
point still runs in a process of its own): it runs and reports the ratio and memory (no timing checks)."""

import json
import math
import os

from tool_runner import run_tool_here


def test_bench_reports_time_ratio_and_memory(demo_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    small = ["--num_images", "8", "--batch_size", "4", "--repeats", "1", "--warmup", "0", "--memory_images", "4,8"]
    printed = run_tool_here("bench_find_sink_dims.py", *small, "--json", str(out))
    assert "ratio" in printed and "memory growth from 4 to 8 images" in printed
    report = json.loads(out.read_text())
    assert isinstance(report["time_ratio"], float) and math.isfinite(report["time_ratio"]) and report["time_ratio"] > 0
    assert report["timing"]["images"] == 8 and len(report["timing"]["stats_samples_ms"]) == 1
    assert [run["images"] for run in report["memory"]] == [4, 8]
    assert report["environment"]["cpus"] == os.cpu_count() and len(report["environment"]["load_average"]) == 2
    assert all(run["stats_mb"] > 0 and math.isfinite(run["peak_rss_above_model_mb"]) for run in report["memory"])
