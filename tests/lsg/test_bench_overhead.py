"""Smoke test of tools/bench_overhead.py at toy sizes, both families: it runs (its main, in this
process) and writes every ratio (LSG train step, prefill, decode / token; DualMLP train step). No
timing checks."""

import json
import math

import pytest
import torch

from tool_runner import run_tool_here

RATIOS = ("train_ratio", "prefill_ratio", "decode_ratio", "dual_mlp_train_ratio")
MEASURES = ("train_step", "prefill", "decode_per_token", "generate", "dual_mlp_train_step")


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_bench_overhead_writes_ratios(family, tmp_path):
    out = tmp_path / "overhead.json"
    small = [
        "--family", family, "--hidden", "64", "--layers", "6", "--vocab", "1000", "--visual_tokens", "16",
        "--text_tokens", "8", "--batch", "2", "--new_tokens", "4", "--repeats", "2", "--threads", "1",
    ]
    printed = run_tool_here("bench_overhead.py", *small, "--json", str(out))
    for label in ("LSG train step", "LSG prefill", "LSG decode / token", "DualMLP train step"):
        assert label in printed, printed
    report = json.loads(out.read_text())
    assert report["family"] == family
    for key in RATIOS:
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert set(report["measures"]) == set(MEASURES)
    for measure in MEASURES:
        row = report["measures"][measure]
        assert len(row["stock_samples_ms"]) == len(row["method_samples_ms"]) == 2, (measure, row)
        assert row["method"] == ("DualMLP" if measure.startswith("dual_mlp") else "LSG")
    assert report["targets"]["dual_mlp_train_step"] == 1.03
    assert report["config"]["gate_layers"] == [1, 2, 3, 5]  # layer 6 does not exist in a 6-layer LLM
    assert report["neutral_gate_loss_difference"] is not None  # the warmup checked neutral gates = stock loss
    assert report["v_sinks_per_image"]["lsg"] > 0 and report["v_sinks_per_image"]["dual_mlp"] > 0
    assert report["environment"]["torch"] == torch.__version__ and len(report["environment"]["load_average"]) == 2
    if family == "qwen2_vl":
        assert report["config"]["mrope_section"] == [8, 12, 12]  # head dim 64: 32 rotary pairs
        assert report["slots_per_image"] == [16, 15]  # dynamic resolution: 4 x 4 and 5 x 3 slots (aspect 1, 4:3)
