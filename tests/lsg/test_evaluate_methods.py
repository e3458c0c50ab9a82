"""tools/evaluate.py --method: every DIYSink variant on the sharpened demo LLaVA, in process, and
the tool once on a real DIYSink run with CoT routing.

Neutral settings reproduce their reference (a DualMLP whose projectors are both the model's own
is sink-to-front; a ReW at its zero start is that DualMLP; CoT samples routed to both token sets
answer as that DualMLP); what a method decides per sample is in its prediction, and its own time
per sample is reported next to the accuracy.
"""

import json

import pytest
import torch

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.encode import first_question
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.rew import ReWeighting
from sinktrain.diysink.rew_file import META, load_rew, save_rew
from sinktrain.diysink.sentence import SentenceEncoder
from sinktrain.errors import SinkTrainError
from sinktrain.eval import evaluate
from sinktrain.eval.methods import build_method
from test_evaluate_tool import load_tool
from tool_helpers import BATCH, answers
from tool_runner import run_tool_here


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs with torch on one thread (see conftest.one_thread)."""


def evaluate_with(model_path, samples, method, **options):
    backbone = load_backbone(model_path)
    return evaluate(backbone, samples, method=build_method(backbone, method, **options), batch_size=int(BATCH))


def saved_rew(model_path, directory, bias=None):
    """A ReW MLP on the demo sentence encoder, at its neutral start or with ``bias`` on its last layer."""
    backbone = load_backbone(model_path)
    attach_dual_mlp(backbone)
    rew = ReWeighting(backbone, SentenceEncoder(str(demo.ensure_demo_sentence_encoder())))
    if bias is not None:
        with torch.no_grad():
            rew.module.mlp[-1].bias.copy_(torch.tensor(bias))
            rew.module.mlp[-1].weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    save_rew(rew, directory, is_main=True)
    return directory, rew


@pytest.fixture(scope="module")
def dual(model_path, samples):
    return evaluate_with(model_path, samples, "diysink")


def test_a_dual_mlp_of_the_models_own_projector_is_sink_to_front(model_path, samples, dual):
    front = evaluate_with(model_path, samples, "sink_to_front")
    assert answers(front) == answers(dual)
    assert (front.method, dual.method) == ("sink_to_front", "diysink")
    assert dual.timing["seconds_per_sample"] > 0 and dual.timing["method_seconds_per_sample"] < dual.timing["seconds_per_sample"]


def test_a_neutral_rew_is_the_plain_dual_mlp(model_path, samples, dual, tmp_path):
    directory, _ = saved_rew(model_path, tmp_path / "rew")
    neutral = evaluate_with(model_path, samples, "diysink_rew", rew=str(directory))
    assert answers(neutral) == answers(dual)
    assert {(p.details["w_sink"], p.details["w_non"]) for p in neutral.predictions} == {(1.0, 1.0)}


def test_rew_weights_are_the_mlps_per_question_and_change_answers(model_path, samples, dual, tmp_path):
    directory, rew = saved_rew(model_path, tmp_path / "rew", bias=[2.0, -2.0])
    results = evaluate_with(model_path, samples, "diysink_rew", rew=str(directory))
    with torch.no_grad():
        expected = rew.module(rew.encoder.embed([first_question(s.question) for s in samples]))
    got = torch.tensor([[p.details["w_sink"], p.details["w_non"]] for p in results.predictions])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert got[:, 0].min() > 1.2 and got[:, 1].max() < 0.8
    assert answers(results) != answers(dual)
    assert results.timing["method_seconds_per_sample"] > 0


def test_cot_routing_records_every_decision(model_path, samples, dual):
    results = evaluate_with(model_path, samples, "diysink_cot")
    reasons = [p.details["reason"] for p in results.predictions]
    assert all(reason == "text-only" for reason, s in zip(reasons, samples) if not s.images)
    assert all(reason in ("routed", "unmatched") for reason, s in zip(reasons, samples) if s.images)
    summary = results.summary
    assert sum(summary["routes"].values()) == len(samples) and summary["unmatched"] == reasons.count("unmatched")
    for routed, plain in zip(results.predictions, dual.predictions):
        if routed.details["route"] == "both":
            assert routed.prediction == plain.prediction, routed.key
    assert results.timing["method_seconds_per_sample"] > 0  # two routing generations per image sample


def test_sink_only_and_non_sink_only_change_only_image_answers(model_path, samples, stock):
    for method in ("sink_only", "non_sink_only"):
        results = evaluate_with(model_path, samples, method)
        pairs = list(zip(results.predictions, stock.predictions, samples))
        assert all(ours.prediction == theirs.prediction for ours, theirs, s in pairs if not s.images), method
        assert any(ours.prediction != theirs.prediction for ours, theirs, s in pairs if s.images), method


def test_the_tool_routes_a_diysink_run_and_writes_decisions(model_path, eval_dir, diysink_checkpoint, tmp_path):
    out = tmp_path / "cot.json"
    log = run_tool_here("evaluate.py", "--model", model_path, "--data", eval_dir, "--limit", "12", "--batch_size", BATCH,
                        "--method", "diysink_cot", "--diysink_checkpoint", str(diysink_checkpoint), "--out", str(out))
    result = json.loads(out.read_text())
    assert result["method"] == "diysink_cot" and "s/sample" in log and "unmatched" in log
    assert set(result["timing"]) == {"seconds_per_sample", "method_seconds_per_sample"}
    assert sum(result["method_summary"]["routes"].values()) == 12
    assert all("route" in p["details"] for p in result["predictions"])
    setup = result["method_setup"]
    assert setup["diysink_checkpoint"] == str(diysink_checkpoint) and set(setup["cot_prompts"]) == {"image", "query"}


def test_method_flag_errors():
    tool = load_tool("evaluate")
    for flags, message in [
        (["--method", "diysink_rew"], "needs --rew DIR"),
        (["--rew", "r"], "needs --rew DIR"),
        (["--method", "sink_to_front", "--gates", "g"], "--gates are LSG's"),
        (["--method", "sink_to_front", "--diysink_checkpoint", "c"], "is a DualMLP model"),
        (["--cot_prompts", "p.json"], "pass it with --method diysink_cot"),
    ]:
        with pytest.raises(SinkTrainError, match=message):
            tool.parse_args(flags)
    assert tool.parse_args(["--diysink_checkpoint", "c"]).method == "diysink"


def test_rew_directories_that_do_not_fit(model_path, tmp_path):
    backbone = load_backbone(model_path)
    attach_dual_mlp(backbone)
    with pytest.raises(SinkTrainError, match="holds no ReW"):
        load_rew(backbone, tmp_path)
    directory, _ = saved_rew(model_path, tmp_path / "rew")
    meta = json.loads((directory / META).read_text())
    (directory / META).write_text(json.dumps({**meta, "family": "qwen2_vl"}))
    with pytest.raises(SinkTrainError, match="trained on a qwen2_vl model"):
        load_rew(backbone, directory)
