"""The oracle and stacking tools for real: tools/oracle_sweep.py, tools/stack_gates.py, gate merging.

Tiny demo LLaVA, real WebDataset shards written here, real greedy generation. The model is the
random demo LLaVA with sharpened attention (see ``tool_helpers.sharp_model``): a random model
answers nonsense, so where a test needs accuracies that move, its eval set takes as reference
answers what one known setting (a fixed coefficient, one gate) generates, and the tool must then
find that setting. The eval set, the model, its stock evaluation and the gate checkpoints are
session fixtures in conftest.py, shared with test_evaluate_tool.py. oracle_sweep.py's main runs
here (tests/tool_runner.py; its command line: tests/test_recipes_families.py), stack_gates.py as a
command; the rest calls the library.
"""

import json

import pytest
import torch
from PIL import Image

from sinktrain.backbones.registry import load_backbone
from sinktrain.errors import SinkTrainError
from sinktrain.eval import evaluate
from sinktrain.lsg.gate_file import META, gating_from_checkpoint
from sinktrain.lsg.oracle import coefficient_grid, fixed_results, oracle_sweep
from sinktrain.lsg.oracle_plot import heatmap_size
from sinktrain.lsg.stacking import best_step, check_stackable, chosen_sets, evaluate_set, merge_gate_sets, read_gate_sets
from tool_helpers import (
    BATCH,
    GATE_LAYERS,
    ORACLE_LAYERS,
    answers,
    exact_match,
    ok,
    other_hidden_size,
    run_tool,
    with_answers,
    write_eval_set,
)
from tool_runner import run_tool_here


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs with torch on one thread (see conftest.one_thread)."""


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
    run_tool_here("oracle_sweep.py", "--model", model_path, "--data", data, "--layers", ",".join(map(str, ORACLE_LAYERS)),
                  "--steps", "3", "--batch_size", BATCH, "--out", str(out))
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
        planted = answers(evaluate_set(backbone, gates, lambda gating: evaluate(backbone, samples, gating, batch_size=int(BATCH))))
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
