"""Smoke test of tools/bench_overhead.py at toy sizes: it runs and writes both ratios (no timing checks)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "bench_overhead.py"


def test_bench_overhead_writes_ratios(tmp_path):
    out = tmp_path / "overhead.json"
    small = ["--hidden", "64", "--layers", "6", "--visual_tokens", "16", "--text_tokens", "8", "--repeats", "2"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *small, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train step" in result.stdout and "decode / token" in result.stdout
    report = json.loads(out.read_text())
    for key in ("train_ratio", "decode_ratio", "prefill_ratio"):
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert report["config"]["gate_layers"] == [1, 2, 3, 5]  # layer 6 does not exist in a 6-layer LLM
    assert len(report["measures"]["train_step"]["stock_samples_ms"]) == 2
    assert report["environment"]["torch"] == torch.__version__ and len(report["environment"]["load_average"]) == 2
