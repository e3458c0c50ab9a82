"""Model cards: real cards for a DIYSink remote-code export and an LSG gates-only adapter read back
through huggingface_hub with the metadata they were written with; the body carries the sink
profile, the training config and the usage snippet; results files written by the real benchmark
and eval-set writers become the card's evaluation rows; broken metadata is refused by name."""

import json

import pytest
from huggingface_hub import ModelCard

from sinktrain.backbones.profiles import known_profile
from sinktrain.benchmarks import get_benchmark
from sinktrain.benchmarks.base import Item
from sinktrain.benchmarks.report import write_run
from sinktrain.benchmarks.runner import score_responses
from sinktrain.errors import SinkTrainError
from sinktrain.eval.results import Prediction, Results
from sinktrain.export.card import CardInfo, check_model_card, check_pipeline_tag, eval_results_in, model_card, write_model_card

PROFILE = json.loads(known_profile("clip-vit-l-14-336", "llama-2-7b").to_json())
DIYSINK_USAGE = """from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained("me/llava-diysink", trust_remote_code=True)"""
LSG_USAGE = """from sinktrain.lsg.gate_file import gating_from_checkpoint  # attaches the gates to the stock model"""
TRAINING = {
    "steps": 5000, "world_size": 8, "lr": 2e-5, "global_batch_size": 128, "precision": "bf16",
    "zero_stage": 3, "data": "shards/llava-665k-{000000..000099}.tar", "epochs": None,
}


def diysink_info(**changes) -> CardInfo:
    info = dict(
        method="diysink", family="llava", base_model="llava-hf/llava-1.5-7b-hf", base_revision="a272c74",
        title="LLaVA-1.5-7B DIYSink", license="llama2", datasets=["liuhaotian/LLaVA-Instruct-150K"],
        sink_profile=PROFILE, method_settings={"sink_first": True, "sink_rule": "diysink"}, training=TRAINING,
        remote_code=True, usage=DIYSINK_USAGE,
    )
    return CardInfo(**(info | changes))


def lsg_info(**changes) -> CardInfo:
    info = dict(
        method="lsg", family="qwen2_vl", base_model="Qwen/Qwen2-VL-7B-Instruct", base_revision=None,
        title="Qwen2-VL-7B LSG gates", license=None, datasets=[], sink_profile=PROFILE,
        method_settings={"layers": [2, 3, 4], "groups": 2}, training={"steps": 300, "world_size": 1, "lr": 1e-3},
        adapter=True, usage=LSG_USAGE,
    )
    return CardInfo(**(info | changes))


def test_diysink_remote_code_card_round_trips(tmp_path):
    path = write_model_card(tmp_path / "export", diysink_info())
    assert path == tmp_path / "export" / "README.md"
    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == {
        "base_model": "llava-hf/llava-1.5-7b-hf", "base_model_relation": "finetune", "license": "llama2",
        "datasets": ["liuhaotian/LLaVA-Instruct-150K"], "pipeline_tag": "image-text-to-text", "library_name": "transformers",
        "tags": ["sinktrain", "attention-sinks", "diysink", "llava", "custom_code"],
    }
    text = loaded.text
    assert text.startswith("# LLaVA-1.5-7B DIYSink")
    assert "To Sink or Not to Sink: Visual Information Pathways in Large Vision-Language Models" in text
    assert "revision `a272c74`" in text and "`trust_remote_code=True`" in text
    assert f"```python\n{DIYSINK_USAGE}\n```" in text
    for row in ["| vit_dims | 650 |", "| tau_v | 60.00 |", "| vit_layer | -2 |", "| criterion | dim_threshold |",
                "| llm_dims | 2533, 1415 |", "| tau_l | 20.00 |", "| llm_rms_norm | true |"]:
        assert row in text  # the sink profile
    assert "`max |h[vit_dims]| >= tau_v`" in text and "`max |h[llm_dims]| >= tau_l` (h after weightless RMSNorm)" in text
    for row in ["| sink_first | true |", "| sink_rule | diysink |"]:
        assert row in text  # the method settings
    for row in ["| steps | 5000 |", "| world_size | 8 |", "| lr | 2e-05 |", "| precision | bf16 |", "| zero_stage | 3 |",
                "| data | shards/llava-665k-{000000..000099}.tar |"]:
        assert row in text  # the training config
    assert "epochs" not in text and "None" not in text and "## Evaluation" not in text


def test_lsg_adapter_card_leaves_out_what_is_unknown(tmp_path):
    loaded = ModelCard.load(write_model_card(tmp_path, lsg_info()))
    assert loaded.data.to_dict() == {
        "base_model": "Qwen/Qwen2-VL-7B-Instruct", "base_model_relation": "adapter", "pipeline_tag": "image-text-to-text",
        "library_name": "transformers", "tags": ["sinktrain", "attention-sinks", "lsg", "qwen2_vl"],
    }
    text = loaded.text
    assert "When Sinks Help or Hurt" in text and "Layer-wise Sink Gating" in text
    assert "LSG gates for [Qwen/Qwen2-VL-7B-Instruct]" in text and "only the trained gates" in text
    assert "trust_remote_code" not in text and "revision" not in text and "None" not in text
    assert LSG_USAGE in text and "| layers | 2, 3, 4 |" in text and "| groups | 2 |" in text and "| lr | 1e-03 |" not in text
    assert "| lr | 0.001 |" in text


def test_a_local_base_has_no_base_model_key(tmp_path):
    loaded = ModelCard.load(write_model_card(tmp_path, diysink_info(base_model=None, base_revision=None, license=None, datasets=[])))
    assert "base_model" not in loaded.data.to_dict() and "license" not in loaded.data.to_dict()
    assert "A fine-tune of a local base model" in loaded.text and "None" not in loaded.text


def test_unknown_method_is_refused():
    with pytest.raises(SinkTrainError, match="method 'var' is unknown"):
        model_card(diysink_info(method="var"))


def write_benchmark_results(path) -> None:
    """A real POPE run over four scripted answers, written by report.write_run as tools/evaluate.py does."""
    bench = get_benchmark("pope")
    golds = [("yes", "adversarial"), ("no", "adversarial"), ("yes", "random"), ("no", "random")]
    items = [Item(str(i), f"Is there a dog?\n{i}", [], gold, group) for i, (gold, group) in enumerate(golds)]
    run = score_responses(bench, items, ["Yes", "yes", "Yes.", "No"])
    setup = {"model": "runs/diysink/export", "source": "lmms-lab/POPE", "split": "test", "method": "diysink", "world_size": 1}
    write_run(run, path, setup)


def write_eval_set_results(path) -> None:
    predictions = [
        Prediction("a", "color", "red", "Red."), Prediction("b", "color", "blue", "green"),
        Prediction("c", "count", "3", "3"), Prediction("d", "count", "2", "2"),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(Results(predictions, method="diysink").to_dict(), indent=2))


def run_dir_with_results(tmp_path):
    run = tmp_path / "runs" / "diysink"
    write_benchmark_results(run / "eval" / "pope.json")
    write_eval_set_results(run / "demo_eval.json")
    (run / "ds_config.json").write_text(json.dumps({"train_batch_size": 8, "zero_optimization": {"stage": 3}}))
    (run / "checkpoints" / "step_000010").mkdir(parents=True)
    (run / "checkpoints" / "trainer_state.json").write_text(json.dumps({"step": 10}))
    (run / "checkpoints" / "step_000010" / "deep.json").write_text(json.dumps({"benchmark": "x", "scores": {}}))  # two levels down
    (run / "run_info.json").write_text("[1, 2]")
    (run / "eval" / "half_written.json").write_text('{"benchmark": "pope", "sco')
    return run


def test_eval_results_in_reads_both_writers_and_skips_the_rest(tmp_path):
    rows = eval_results_in(run_dir_with_results(tmp_path))
    assert rows == [
        {"eval set": "demo_eval", "method": "diysink", "accuracy": 75.0, "accuracy (color)": 50.0, "accuracy (count)": 100.0, "samples": 4},
        {"benchmark": "pope", "method": "diysink", "accuracy": 75.0, "f1": pytest.approx(80.0), "mean_split_f1": pytest.approx(100 * 5 / 6), "samples": 4},
    ]


def test_gated_benchmark_runs_say_so(tmp_path):
    path = tmp_path / "pope.json"
    write_benchmark_results(path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"method": "stock", "gates": "runs/lsg/gates"}))
    assert eval_results_in(tmp_path)[0]["method"] == "stock + LSG gates"


def test_card_shows_the_evaluation_table(tmp_path):
    rows = eval_results_in(run_dir_with_results(tmp_path))
    text = ModelCard.load(write_model_card(tmp_path / "export", diysink_info(eval_results=rows))).text
    table = text[text.index("## Evaluation"):].splitlines()
    assert table[2] == "| evaluation | method | accuracy | accuracy (color) | accuracy (count) | f1 | mean_split_f1 | samples |"
    assert table[4] == "| demo_eval | diysink | 75.00 | 50.00 | 100.00 |  |  | 4 |"
    assert table[5] == "| pope | diysink | 75.00 |  |  | 80.00 | 83.33 | 4 |"


def test_metadata_that_is_not_a_dict_is_refused(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("---\n- base_model\n- tags\n---\n# card\n")
    with pytest.raises(SinkTrainError, match="metadata block does not parse"):
        check_model_card(path, diysink_info())
    path.write_text("---\ntags: [sinktrain\n---\n# card\n")
    with pytest.raises(SinkTrainError, match="metadata block does not parse"):
        check_model_card(path, diysink_info())


def test_a_missing_required_key_is_named(tmp_path):
    info = diysink_info()
    card = model_card(info)
    card.data.library_name = None
    path = tmp_path / "README.md"
    card.save(path)
    with pytest.raises(SinkTrainError, match=r"lacks \['library_name'\]"):
        check_model_card(path, info)


def test_metadata_that_reads_back_differently_is_refused(tmp_path):
    info = diysink_info()
    card = model_card(info)
    card.data.license = "mit"
    path = tmp_path / "README.md"
    card.save(path)
    with pytest.raises(SinkTrainError, match=r"metadata \['license'\] read back differently"):
        check_model_card(path, info)


def test_pipeline_tag_must_be_a_transformers_task(tmp_path):
    check_pipeline_tag("image-text-to-text", tmp_path / "README.md")
    with pytest.raises(SinkTrainError, match="'image-to-sink' is not a transformers pipeline task"):
        check_pipeline_tag("image-to-sink", tmp_path / "README.md")
