"""Smoke test of tools/bench_diysink.py at toy sizes, both families: it runs, stays quiet and writes
every ratio (ReW and CoT routing against the plain DualMLP model). No timing checks."""

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

import sinktrain.demo
from console import check_quiet

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench_diysink.py"
FAMILIES = ("llava", "qwen2_vl")
RATIOS = ("rew_ratio", "cot_ratio")
MEASURES = ("rew_generate", "rew_total", "cot_generate", "cot_total")
TINY = [
    "--hidden", "64", "--layers", "2", "--vocab", "1000", "--visual_tokens", "16", "--text_tokens", "8", "--batch", "2",
    "--new_tokens", "3", "--cot_tokens", "2", "--repeats", "2", "--warmup", "0", "--threads", "1",
]


def check_report(report: dict, family: str) -> None:
    assert report["family"] == family
    for key in RATIOS:
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert set(report["measures"]) == set(MEASURES)
    for measure, row in report["measures"].items():
        assert len(row["stock_samples_ms"]) == len(row["method_samples_ms"]) == 2, (measure, row)
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, (measure, row)
        assert row["method"] == ("ReW" if measure.startswith("rew") else "CoT")
    assert report["targets"] == {"rew_total": 1.02}
    assert all(value > 0 for value in report["selection_ms_per_sample"].values())
    assert report["sentence_encoder"]["width"] == 384 and report["sentence_encoder"]["parameters"] > 20e6  # MiniLM's shape
    assert len(report["rew_weights"]) == 2 and all(abs(w - 1) > 1e-3 for row in report["rew_weights"] for w in row)  # not neutral
    routing = report["routing"]
    assert routing["decide_calls"] == 2 and sum(routing["routes"].values()) == 4  # 2 samples per decision
    assert 0 <= routing["mean_unmatched_per_call"] <= 2
    assert report["v_sinks_per_image"] > 0
    assert report["environment"]["torch"] == torch.__version__


def test_bench_diysink_writes_ratios(tmp_path):
    sinktrain.demo.ensure_demo_sentence_encoder()  # its tokenizer, built once here rather than in both runs
    runs = {}
    for family in FAMILIES:  # both at once, one thread each: the imports dominate a toy run
        out = tmp_path / f"{family}.json"
        command = [sys.executable, str(SCRIPT), "--family", family, *TINY, "--json", str(out)]
        runs[family] = (out, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        done = {family: process.communicate(timeout=300) for family, (_, process) in runs.items()}
    finally:
        for _, process in runs.values():
            if process.poll() is None:
                process.kill()
    for family, (stdout, stderr) in done.items():
        out, process = runs[family]
        assert process.returncode == 0, stdout + stderr
        check_quiet(stdout + stderr)
        assert "WARNING" not in stderr, stderr  # e.g. DeepSpeed's accelerator notice when something imports it
        for label in ("ReW select + generate 3", "CoT route + generate 3", "ReW generate 3 (weighted)", "CoT generate 3 (routed)"):
            assert label in stdout, stdout
        check_report(json.loads(out.read_text()), family)
