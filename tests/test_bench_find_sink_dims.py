"""Smoke test of tools/bench_find_sink_dims.py at toy sizes: it runs and reports the ratio and memory (no timing checks)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench_find_sink_dims.py"


def test_bench_reports_time_ratio_and_memory(demo_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    small = ["--num_images", "8", "--batch_size", "4", "--repeats", "1", "--warmup", "0", "--memory_images", "4,8"]
    done = subprocess.run([sys.executable, str(SCRIPT), *small, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ratio" in done.stdout and "memory growth from 4 to 8 images" in done.stdout
    report = json.loads(out.read_text())
    assert isinstance(report["time_ratio"], float) and math.isfinite(report["time_ratio"]) and report["time_ratio"] > 0
    assert report["timing"]["images"] == 8 and len(report["timing"]["stats_samples_ms"]) == 1
    assert [run["images"] for run in report["memory"]] == [4, 8]
    assert report["environment"]["cpus"] == os.cpu_count() and len(report["environment"]["load_average"]) == 2
    assert all(run["stats_mb"] > 0 and math.isfinite(run["peak_rss_above_model_mb"]) for run in report["memory"])
