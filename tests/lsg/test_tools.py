"""The evaluation tools for real: tools/evaluate.py, tools/oracle_sweep.py, tools/stack_gates.py.

Tiny demo LLaVA, real WebDataset shards written here, real greedy generation. The model is the
random demo LLaVA with sharpened attention (see ``sharp_model``): a random model answers nonsense,
so where a test needs accuracies that move, its eval set takes as reference answers what one
known setting (a fixed coefficient, one gate) generates, and the tool must then find that
setting. Each tool runs once as a subprocess (exit codes, files); the rest calls the library.
(The trained demo model answers sensibly, but building it takes a minute of finetuning.)
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from sinktrain.backbones.registry import PROFILE_FILE, load_backbone
from sinktrain.data.eval_set import read_eval_set
from sinktrain.data.scenes import demo_samples
from sinktrain.data.shards import write_shards
from sinktrain.errors import SinkTrainError
from sinktrain.evaluate import evaluate, normalise
from sinktrain.lsg.gate_file import META, gate_state, gating_from_checkpoint, meta_for, save_gates
from sinktrain.lsg.oracle import coefficient_grid, fixed_results, oracle_sweep
from sinktrain.lsg.oracle_plot import heatmap_size
from sinktrain.lsg.scoped import scoped_gating
from sinktrain.lsg.stacking import best_step, check_stackable, chosen_sets, evaluate_set, merge_gate_sets, read_gate_sets

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SAMPLES, TEXT_SAMPLES = 20, 4
ATTENTION_GAIN = 5.0  # q and k weights x5: attention logits x25
BATCH = "8"
ORACLE_LAYERS = [1, 2]
GATE_LAYERS = [0, 1, 2]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs with torch on one thread (see conftest.one_thread)."""


def run_tool(name: str, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # same arithmetic as in this process: answers must match bit for bit
    command = [sys.executable, str(ROOT / "tools" / name), *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def answers(results) -> list[str]:
    return [p.prediction for p in results.predictions]


# -- eval sets -----------------------------------------------------------------------------


def demo_records(images: int, texts: int) -> list[tuple]:
    """`texts` text-only then `images` image samples of a demo stream, as (record, png, ext)."""
    picked = {True: [], False: []}
    for record, png in demo_samples(1000, seed=7):
        wanted = picked[png is not None]
        if len(wanted) < (images if png is not None else texts):
            wanted.append((record, png, None if png is None else "png"))
    return picked[False] + picked[True]  # text-only first: a small --limit still holds some


def write_eval_set(directory: Path, triples: list[tuple]) -> str:
    write_shards(triples, str(directory / "eval-%06d.tar"), max_samples_per_shard=16)
    return str(directory / "eval-*.tar")


def with_answers(triples: list[tuple], replies: list[str]) -> list[tuple]:
    """The same records with the first gpt answer replaced: reference answers we choose."""
    out = []
    for (record, png, ext), reply in zip(triples, replies):
        turns = [dict(turn) for turn in record["conversations"]]
        turns[1]["value"] = reply
        out.append((dict(record, conversations=turns), png, ext))
    return out


def exact_match(replies: list[str], results) -> float:
    return 100.0 * sum(normalise(a) == normalise(b) for a, b in zip(replies, answers(results))) / len(replies)


@pytest.fixture(scope="module")
def triples():
    return demo_records(IMAGE_SAMPLES, TEXT_SAMPLES)


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, triples):
    return write_eval_set(tmp_path_factory.mktemp("eval"), triples)


@pytest.fixture(scope="module")
def model_path(demo_model_dir, tmp_path_factory):
    return str(sharp_model(demo_model_dir, tmp_path_factory.mktemp("sharp-model")))


def sharp_model(source: Path, target: Path) -> Path:
    """The demo LLaVA with every query and key projection scaled up, saved as a model directory.

    A random init attends almost uniformly, so scaling visual keys by 0..2 barely moves its
    logits and never its greedy answers; sharper attention makes LSG's key scaling matter."""
    backbone = load_backbone(str(source))
    with torch.no_grad():
        for layer in backbone.decoder_layers():
            layer.self_attn.q_proj.weight.mul_(ATTENTION_GAIN)
            layer.self_attn.k_proj.weight.mul_(ATTENTION_GAIN)
    backbone.model.save_pretrained(target)
    backbone.processor.save_pretrained(target)
    (target / PROFILE_FILE).write_bytes((source / PROFILE_FILE).read_bytes())
    return target


@pytest.fixture(scope="module")
def backbone(model_path):
    return load_backbone(model_path)


@pytest.fixture(scope="module")
def samples(eval_dir):
    return read_eval_set(eval_dir)


@pytest.fixture(scope="module")
def stock(backbone, samples):
    return evaluate(backbone, samples, batch_size=int(BATCH))


def gate_dir(backbone, directory: Path, layer: int, bias: tuple[float, float]) -> Path:
    """A 'trained' single-layer gate checkpoint: non-zero output weights, saved as lsg_train does."""
    with scoped_gating(backbone, [layer]) as gating:
        torch.manual_seed(layer)
        with torch.no_grad():
            gate = gating.gates[str(layer)]
            torch.nn.init.normal_(gate.out.weight, std=0.1)  # input-dependent, bias-dominated
            gate.out.bias.copy_(torch.tensor(bias))
        save_gates(directory, gate_state(gating), meta_for(gating))
    return directory


@pytest.fixture(scope="module")
def gate_dirs(backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("gates")
    biases = [(3.0, -3.0), (-3.0, 3.0), (2.0, -2.0)]  # c_sink near 2, near 0, ~1.96
    return {layer: gate_dir(backbone, root / f"l{layer}", layer, bias) for layer, bias in zip(GATE_LAYERS, biases)}


# -- evaluation ----------------------------------------------------------------------------


def test_exact_match_normalisation():
    assert normalise("  Red. ") == normalise("red") == "red"
    assert normalise("Two large circles.") == "two large circles"
    assert normalise("3") != normalise("4")


def test_eval_set_reads_answers_categories_and_text_only(samples, triples, eval_dir):
    assert len(samples) == IMAGE_SAMPLES + TEXT_SAMPLES
    assert sum(s.image is None for s in samples) == TEXT_SAMPLES
    assert {s.category for s in samples if s.image is None} == {"other"}
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
    assert not hasattr(backbone.model, "sink_gates") and not backbone.batch_hooks  # taken off again


def test_batching_does_not_change_answers(backbone, samples, stock):
    assert answers(evaluate(backbone, samples[:12], batch_size=1)) == answers(stock)[:12]


def test_stock_results_json(stock):
    result = stock.to_dict(with_r_sink=True)
    assert "r_sink" not in result and result["per_category"]["overall"]["count"] == len(stock.predictions)
    assert set(result["per_category"]) == {"count", "colour", "shape", "size", "caption", "other", "overall"}
    assert json.loads(json.dumps(result)) == result


def test_evaluate_tool_with_a_trained_gate(model_path, eval_dir, gate_dirs, stock, tmp_path):
    out, limit = tmp_path / "gated.json", 12
    log = ok(run_tool("evaluate.py", "--model", model_path, "--data", eval_dir, "--limit", str(limit),
                      "--gates", str(gate_dirs[0]), "--report_r_sink", "--batch_size", BATCH, "--out", str(out)))
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


# -- oracle sweep --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle_eval(backbone, samples, stock, triples, tmp_path_factory):
    """An eval set whose answers are what one fixed (layer, c_sink) generates: the sweep must find it.

    The setting is the first on the --steps 3 grid that changes an answer."""
    for layer in ORACLE_LAYERS:
        for c_sink in (0.0, 2.0):
            planted = answers(fixed_results(backbone, samples, layer, c_sink, batch_size=int(BATCH)))
            if planted != answers(stock):
                data = write_eval_set(tmp_path_factory.mktemp("oracle-eval"), with_answers(triples, planted))
                return data, layer, c_sink, exact_match(planted, stock)
    pytest.fail("no fixed coefficient changes an answer of the model; raise ATTENTION_GAIN or the samples")


def test_oracle_sweep_tool_finds_the_planted_coefficient(model_path, oracle_eval, tmp_path):
    data, layer, c_sink, baseline = oracle_eval
    out = tmp_path / "oracle.json"
    ok(run_tool("oracle_sweep.py", "--model", model_path, "--data", data, "--layers", ",".join(map(str, ORACLE_LAYERS)),
                "--steps", "3", "--batch_size", BATCH, "--out", str(out)))
    result = json.loads(out.read_text())
    assert result["grid"] == [0.0, 1.0, 2.0] and list(result["layers"]) == [str(l) for l in ORACLE_LAYERS]
    assert result["baseline"]["overall"] == pytest.approx(baseline) and baseline < 100.0
    assert all(sweep["1"] == result["baseline"] for sweep in result["layers"].values())  # c_sink 1 = stock
    assert result["layers"][str(layer)][f"{c_sink:g}"]["overall"] == 100.0
    assert result["best"][str(layer)]["overall"] == {"c_sink": c_sink, "gain": pytest.approx(100.0 - baseline)}
    with Image.open(out.with_suffix(".png")) as png:
        assert png.size == heatmap_size(len(ORACLE_LAYERS), len(result["categories"]))
        assert len(png.convert("RGB").getcolors(maxcolors=1 << 20)) > 10  # a drawn heatmap, not a blank canvas


def test_coefficient_grid():
    assert coefficient_grid() == pytest.approx([0.2 * i for i in range(11)])
    with pytest.raises(SinkTrainError, match="odd number"):
        coefficient_grid(4)


def test_oracle_refuses_layers_out_of_range_before_evaluating(backbone, samples):
    with pytest.raises(SinkTrainError, match=r"out of range: this LLM has 4 decoder layers"):
        oracle_sweep(backbone, samples, [1, 7], coefficient_grid(3))


# -- greedy stacking -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack_eval(backbone, samples, stock, gate_dirs, triples, tmp_path_factory):
    """An eval set whose answers are what one single-layer gate generates: stacking must put it first."""
    for layer in GATE_LAYERS:
        (gates,) = read_gate_sets([str(gate_dirs[layer])])
        planted = answers(evaluate_set(backbone, samples, gates, batch_size=int(BATCH)))
        if planted != answers(stock):
            return write_eval_set(tmp_path_factory.mktemp("stack-eval"), with_answers(triples, planted)), layer
    pytest.fail("no gate changes an answer of the model; raise ATTENTION_GAIN or the samples")


def test_stack_gates_tool(model_path, stack_eval, gate_dirs, tmp_path):
    data, planted_layer = stack_eval
    out = tmp_path / "stack"
    inputs = [str(gate_dirs[layer]) for layer in GATE_LAYERS]
    log = ok(run_tool("stack_gates.py", "--model", model_path, "--data", data, "--gates", *inputs,
                      "--keep", "all", "--batch_size", BATCH, "--out", str(out)))
    result = json.loads((out / "stacking.json").read_text())
    assert result["order"][0] == str(gate_dirs[planted_layer])
    steps = result["steps"]
    assert [row["step"] for row in steps] == [0, 1, 2, 3] and steps[0]["layers"] == []
    assert [len(row["layers"]) for row in steps] == [0, 1, 2, 3] and steps[1]["layers"] == [planted_layer]
    assert steps[1]["accuracy"] == 100.0 and steps[1]["gain"] == pytest.approx(100.0 - steps[0]["accuracy"])
    markdown = (out / "stacking.md").read_text().strip().splitlines()
    assert len(markdown) == 2 + len(steps) and markdown[0].startswith("| step | layers |")
    assert f"| 1 | L{planted_layer} |" in log
    gating = gating_from_checkpoint(load_backbone(model_path), out)  # --keep all: the union of layers
    assert gating.layers == GATE_LAYERS and json.loads((out / META).read_text())["layers"] == GATE_LAYERS
    for layer in GATE_LAYERS:  # every input's gate, unchanged
        state = read_gate_sets([str(gate_dirs[layer])])[0].state
        assert torch.equal(gating.gates[str(layer)].out.weight, state[f"{layer}.out.weight"])
    assert best_step(result)["step"] == 1
    assert [s.meta.layers for s in chosen_sets(result, read_gate_sets(inputs), "best")] == [[planted_layer]]


def test_merge_is_a_union_and_refuses_duplicates_and_other_models(gate_dirs, tmp_path):
    sets = read_gate_sets([str(gate_dirs[1]), str(gate_dirs[2])])
    merged = merge_gate_sets(sets)
    assert merged.meta.layers == [1, 2] and merged.state == sets[0].state | sets[1].state
    with pytest.raises(SinkTrainError, match="layer 1 is gated by both"):
        check_stackable(read_gate_sets([str(gate_dirs[1]), str(gate_dirs[1])]))
    wider = other_hidden_size(gate_dirs[2], tmp_path / "wide")
    with pytest.raises(SinkTrainError, match="trained for different models"):
        merge_gate_sets(read_gate_sets([str(gate_dirs[1]), str(wider)]))


# -- bad input -----------------------------------------------------------------------------


def other_hidden_size(source: Path, target: Path) -> Path:
    """A copy of a gate checkpoint whose gates.json claims another LLM width."""
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    meta = json.loads((target / META).read_text())
    (target / META).write_text(json.dumps(dict(meta, hidden_size=256)))
    return target


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
    spec = importlib.util.spec_from_file_location(f"sinktrain_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(scope="module")
def diysink_checkpoint(model_path, eval_dir, tmp_path_factory):
    """Three real DIYSink finetuning steps (single process, ZeRO-3) on the eval shards (the
    scheduler's first step has lr 0)."""
    out = tmp_path_factory.mktemp("diysink-run")
    command = [sys.executable, str(ROOT / "recipes" / "diysink_finetune.py"), "--model", model_path, "--data", eval_dir,
               "--output_dir", str(out), "--max_steps", "3", "--per_device_batch_size", "2", "--num_workers", "0",
               "--lr", "1e-2", "--warmup_ratio", "0"]
    ok(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")))
    return out / "checkpoints" / "step_000003"


def test_evaluate_a_diysink_checkpoint(model_path, diysink_checkpoint, samples):
    from sinktrain.diysink.checkpoint import consolidated_state, load_diysink_checkpoint
    from sinktrain.diysink.connector import DualMLPConnector

    backbone = load_backbone(model_path)
    load_diysink_checkpoint(backbone, diysink_checkpoint)
    assert isinstance(backbone.connector, DualMLPConnector)
    trained = consolidated_state(diysink_checkpoint)
    for name, value in backbone.model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert not torch.equal(backbone.model.lm_head.weight, load_backbone(model_path).model.lm_head.weight)  # trained
    results = evaluate(backbone, samples[:8], batch_size=4)  # text-only and image samples
    assert results.per_category()["overall"]["count"] == 8 and "other" in results.per_category()
