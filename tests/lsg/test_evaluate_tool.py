"""The evaluation tool for real: tools/evaluate.py, the eval set, a DIYSink checkpoint, bad input.

Tiny demo LLaVA, real WebDataset shards written here, real greedy generation. The model is the
random demo LLaVA with sharpened attention (see ``tool_helpers.sharp_model``); the eval set, the
model, its stock evaluation and the gate checkpoints are session fixtures in conftest.py, shared
with test_oracle_stack_tools.py. The tool's main runs here (tests/tool_runner.py; one thread, the
library's arithmetic) and once as a command that must refuse bad input; the rest calls the library. (The trained demo model answers sensibly, but building it takes a minute of
finetuning.)
"""

import json
from pathlib import Path

import pytest
import torch

from scripts import load_script
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.eval_set import read_eval_set
from sinktrain.errors import SinkTrainError
from sinktrain.eval import evaluate, normalise
from sinktrain.lsg.gate_file import META, gating_from_checkpoint
from sinktrain.lsg.scoped import scoped_gating
from tool_helpers import (
    BATCH,
    IMAGE_SAMPLES,
    TEXT_SAMPLES,
    answers,
    other_hidden_size,
    run_tool,
    write_eval_set,
)
from tool_runner import run_tool_here


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs with torch on one thread (see conftest.one_thread)."""


# -- evaluation ----------------------------------------------------------------------------


def test_exact_match_normalisation():
    assert normalise("  Red. ") == normalise("red") == "red"
    assert normalise("Two large circles.") == "two large circles"
    assert normalise("3") != normalise("4")


def test_eval_set_reads_answers_categories_and_text_only(samples, triples, eval_dir):
    assert len(samples) == IMAGE_SAMPLES + TEXT_SAMPLES
    assert sum(not s.images for s in samples) == TEXT_SAMPLES
    assert {s.category for s in samples if not s.images} == {"other"}
    by_key = {s.key: s for s in samples}
    for record, _, _ in triples:
        assert by_key[record["id"]].answer == record["conversations"][1]["value"]
        assert by_key[record["id"]].category == record["category"]
    assert [s.key for s in read_eval_set(eval_dir, limit=3)] == [s.key for s in samples[:3]]


def test_neutral_gates_equal_stock_and_text_only_works(backbone, samples, stock):
    with scoped_gating(backbone, [1, 3]) as gating:
        gated = evaluate(backbone, samples, gating, batch_size=int(BATCH))
    assert answers(gated) == answers(stock)
    assert all(p.prediction for p in stock.predictions if p.category == "other")  # text-only rows generated
    stats = gated.r_sink_stats()
    assert set(stats) == {"1", "3"} and stats["1"]["overall"]["n"] == len(samples)
    assert stats["1"]["overall"]["mean"] == pytest.approx(0.5) and stats["3"]["other"]["std"] == pytest.approx(0.0)
    assert not hasattr(backbone.model, "sink_gates")  # taken off again: no gates, no hooks
    for layer in backbone.decoder_layers():
        assert not layer._forward_pre_hooks and not layer.self_attn.k_proj._forward_hooks


def test_batching_does_not_change_answers(backbone, samples, stock):
    assert answers(evaluate(backbone, samples[:12], batch_size=1)) == answers(stock)[:12]


def test_stock_results_json(stock):
    result = stock.to_dict(with_r_sink=True)
    assert "r_sink" not in result and result["per_category"]["overall"]["count"] == len(stock.predictions)
    assert set(result["per_category"]) == {"count", "colour", "shape", "size", "caption", "other", "overall"}
    assert json.loads(json.dumps(result)) == result


def test_evaluate_tool_with_a_trained_gate(model_path, eval_dir, gate_dirs, stock, tmp_path):
    out, limit = tmp_path / "gated.json", 12
    log = run_tool_here("evaluate.py", "--model", model_path, "--data", eval_dir, "--limit", str(limit),
                        "--gates", str(gate_dirs[0]), "--report_r_sink", "--batch_size", BATCH, "--out", str(out))
    result = json.loads(out.read_text())
    assert "accuracy %" in log and "layer 0" in log
    per_category = result["per_category"]
    assert per_category["overall"]["count"] == limit == sum(v["count"] for c, v in per_category.items() if c != "overall")
    assert set(per_category) == {p.category for p in stock.predictions[:limit]} | {"overall"}
    assert "other" in per_category  # text-only samples were evaluated too
    assert result["accuracy"] == per_category["overall"]["accuracy"]
    r_sink = result["r_sink"]["0"]
    assert set(r_sink) == set(per_category) and r_sink["overall"]["n"] == limit
    assert r_sink["overall"]["mean"] > 0.9  # out bias (3, -3) favours the sink group; neutral gates give 0.5


# -- bad input -----------------------------------------------------------------------------


def test_gates_for_another_hidden_size_are_refused(model_path, eval_dir, gate_dirs, tmp_path):
    wide = other_hidden_size(gate_dirs[1], tmp_path / "wide")
    with pytest.raises(SinkTrainError, match="hidden size 256"):
        gating_from_checkpoint(load_backbone(model_path), wide)
    done = run_tool("evaluate.py", "--model", model_path, "--data", eval_dir, "--gates", str(wide))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: gates in" in done.stderr and "hidden size 256" in done.stderr and "Traceback" not in done.stderr


def edited_eval_set(directory: Path, triples: list[tuple], edit) -> str:
    records = []
    for record, png, ext in triples[:3]:
        record = json.loads(json.dumps(record))
        edit(record)
        records.append((record, png, ext))
    return write_eval_set(directory, records)


def test_eval_set_without_answers_or_categories(triples, tmp_path):
    no_answer = edited_eval_set(tmp_path / "a", triples, lambda r: r.update(conversations=r["conversations"][:1]))
    with pytest.raises(SinkTrainError, match="has no answer .*gpt turn"):
        read_eval_set(no_answer)
    no_category = edited_eval_set(tmp_path / "c", triples, lambda r: r.pop("category"))
    with pytest.raises(SinkTrainError, match='no "category" field.*add one to every record'):
        read_eval_set(no_category)


def load_tool(name: str):
    return load_script(f"tools/{name}.py")


def test_flag_errors(tmp_path):
    evaluate_tool, stack_tool = load_tool("evaluate"), load_tool("stack_gates")
    with pytest.raises(SinkTrainError, match="needs --gates"):
        evaluate_tool.parse_args(["--report_r_sink"])
    with pytest.raises(SinkTrainError, match="pass one of them"):
        evaluate_tool.parse_args(["--gates", "g", "--diysink_checkpoint", "c"])
    (tmp_path / META).write_text("{}")
    with pytest.raises(SinkTrainError, match="already holds a gate checkpoint"):
        stack_tool.parse_args(["--gates", "g", "--out", str(tmp_path)])
    with pytest.raises(SinkTrainError, match="comma-separated layer indices"):
        load_tool("oracle_sweep").parse_args(["--layers", "1,x"])


def test_diysink_checkpoint_that_is_not_one(backbone, tmp_path):
    from sinktrain.diysink.checkpoint import load_diysink_checkpoint

    with pytest.raises(SinkTrainError, match="is not a DeepSpeed checkpoint directory"):
        load_diysink_checkpoint(backbone, tmp_path)
    assert "DualMLP" not in type(backbone.connector).__name__  # refused before touching the model


def test_evaluate_a_diysink_checkpoint(model_path, diysink_checkpoint, samples):
    from sinktrain.diysink.checkpoint import consolidated_state, load_diysink_checkpoint
    from sinktrain.modeling.connector import DualMLPConnector

    backbone = load_backbone(model_path)
    load_diysink_checkpoint(backbone, diysink_checkpoint)
    assert isinstance(backbone.connector, DualMLPConnector)
    trained = consolidated_state(diysink_checkpoint)
    for name, value in backbone.model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert not torch.equal(backbone.model.lm_head.weight, load_backbone(model_path).model.lm_head.weight)  # trained
    results = evaluate(backbone, samples[:8], batch_size=4)  # text-only and image samples
    assert results.per_category()["overall"]["count"] == 8 and "other" in results.per_category()
