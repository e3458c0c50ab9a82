"""tools/evaluate.py --benchmark for real: the tiny demo LLaVA on a local MMStar copy in the public
schema; the results JSON, Markdown table and predictions agree with each other; LSG gates report
r_sink per sub-task; bad flags fail early. (2 ranks under Slurm give exactly the 1-rank results:
tests/slurm/test_sbatch_tools.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hub_data import picture, write_hub_dataset
from scripts import load_script
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.runner import build_items, score_responses
from sinktrain.errors import SinkTrainError
from sinktrain.lsg.gate_file import gate_state, meta_for, save_gates
from sinktrain.lsg.scoped import scoped_gating
from test_mmstar import FEATURES, MATH, PERCEPTION, row

ROOT = Path(__file__).resolve().parents[2]
ROWS = [row(i, "ABCD"[i % 4], PERCEPTION if i % 3 else MATH, f"l2 {i % 3}") for i in range(10)]
FLAGS = ("--benchmark", "mmstar", "--batch_size", "3", "--max_new_tokens", "5")


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return str(write_hub_dataset(tmp_path_factory.mktemp("bench") / "MMStar", {"val": ROWS}, FEATURES))


@pytest.fixture(scope="module")
def single_rank(copy, demo_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-rank") / "mmstar.json"
    done = run_tool("--model", str(demo_model_dir), "--benchmark_path", copy, *FLAGS, "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def run_tool(*flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same arithmetic in every process compared here
    return subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), *flags], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def predictions(results_json: Path) -> list[dict]:
    return [json.loads(line) for line in results_json.with_name("mmstar.predictions.jsonl").read_text().splitlines()]


def test_results_json_markdown_and_predictions_agree(single_rank, copy):
    out, stdout = single_rank
    results, predicted = json.loads(out.read_text()), predictions(out)
    assert results["samples"] == len(predicted) == len(ROWS) and results["world_size"] == 1
    assert [p["key"] for p in predicted] == [str(i) for i in range(len(ROWS))]
    bench = get_benchmark("mmstar")
    rescored = score_responses(bench, build_items(bench, load_rows(bench, copy)), [p["response"] for p in predicted])
    assert results["scores"] == rescored.scores.headline and results["unparsed"] == rescored.unparsed
    assert [p["correct"] for p in predicted] == [j.correct for j in rescored.judged]
    markdown = out.with_name("mmstar.md").read_text()
    assert f"| unparsed | {rescored.unparsed} |" in markdown and "### per category" in markdown
    assert markdown.strip() in stdout  # the table printed is the table written


def load_tool():
    return load_script("tools/evaluate.py")


def test_gates_report_r_sink_per_sub_task(copy, demo_model_dir, tmp_path):
    from sinktrain.backbones.registry import load_backbone

    backbone = load_backbone(str(demo_model_dir))
    torch.manual_seed(0)
    with scoped_gating(backbone, [1]) as gating:
        save_gates(tmp_path / "gates", gate_state(gating), meta_for(gating))
    out = tmp_path / "gated.json"
    load_tool().main(["--model", str(demo_model_dir), "--benchmark_path", copy, *FLAGS, "--gates", str(tmp_path / "gates"), "--report_r_sink", "--out", str(out)])
    r_sink = json.loads(out.read_text())["r_sink"]["1"]
    assert set(r_sink) == {PERCEPTION, MATH, "all"}
    assert r_sink["all"]["n"] == len(ROWS) and r_sink[MATH]["n"] + r_sink[PERCEPTION]["n"] == len(ROWS)
    assert r_sink["all"]["mean"] == pytest.approx(0.5, abs=1e-6)  # neutral gates at init: r = (0.5, 0.5)


def test_bad_flags_fail_before_any_model_loads(copy, tmp_path, capsys):
    tool = load_tool()
    with pytest.raises(SinkTrainError, match="--data is an eval set of shards and --benchmark mmstar"):
        tool.parse_args(["--benchmark", "mmstar", "--data", "x.tar"])
    with pytest.raises(SinkTrainError, match="pass --benchmark NAME"):
        tool.parse_args(["--benchmark_path", copy])
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(["--benchmark", "mmbench"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "invalid choice: 'mmbench'" in err and all(name in err for name in ("mmstar", "mathvista"))
    features = FEATURES.__class__({name: FEATURES[name] for name in ("index", "question", "image")})
    broken = write_hub_dataset(tmp_path / "broken", {"val": [{"index": 0, "question": "q", "image": picture(0)}]}, features)
    with pytest.raises(SinkTrainError, match="has no column 'answer', 'category', 'l2_category'"):
        tool.main(["--benchmark", "mmstar", "--benchmark_path", str(broken), "--model", "no/such-model"])  # data checked first
