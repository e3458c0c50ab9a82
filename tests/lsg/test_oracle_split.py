"""Stage 2 of the oracle sweep (sinktrain.lsg.oracle_split, tools/oracle_sweep.py --split_rest): the
V-sink coefficient held at its stage-1 optimum, L-sink and ordinary coefficients swept apart.

On the sharpened demo LLaVA (conftest.py): equal L-sink and ordinary coefficients are the 2-group
model exactly; an eval set whose answers are what one 3-group setting generates is found by the
sweep (from a stage-1 result that holds that c_sink), through the library and the tool.
"""

import json

import pytest

from sinktrain.errors import SinkTrainError
from sinktrain.lsg.oracle import accuracies, coefficient_grid, fixed_results
from sinktrain.lsg.oracle_split import split_rest_sweep, split_results
from sinktrain.eval import evaluate
from tool_helpers import BATCH, ORACLE_LAYERS, answers, with_answers, write_eval_set
from tool_runner import run_tool_here

GRID = coefficient_grid(3)  # 0, 1, 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs with torch on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def planted(backbone, samples, triples, tmp_path_factory):
    """(eval dir, layer, c_sink, (c_lsink, c_ordinary)): the first 3-group setting on the grid whose
    answers differ from its 2-group setting's; the eval set's answers are that setting's."""
    for layer in ORACLE_LAYERS:
        for c_sink in (0.0, 2.0):
            two_group = answers(fixed_results(backbone, samples, layer, c_sink, batch_size=int(BATCH)))
            for pair in ((0.0, 2.0), (2.0, 0.0)):
                three_group = answers(split_results(backbone, samples, layer, (c_sink, *pair), batch_size=int(BATCH)))
                if three_group != two_group:
                    data = write_eval_set(tmp_path_factory.mktemp("split-eval"), with_answers(triples, three_group))
                    return data, layer, c_sink, pair
    pytest.fail("no L-sink / ordinary split changes an answer; raise ATTENTION_GAIN or the samples")


def stage_one_for(backbone, samples, layer: int, c_sink: float) -> dict:
    """A stage-1 result (as oracle_sweep writes it) whose best c_sink at ``layer`` is ``c_sink`` for every task."""
    baseline = accuracies(evaluate(backbone, samples, batch_size=int(BATCH)))
    cell = accuracies(fixed_results(backbone, samples, layer, c_sink, batch_size=int(BATCH)))
    return {
        "grid": GRID, "baseline": baseline, "categories": list(baseline),
        "layers": {str(layer): {f"{c_sink:g}": cell, "1": baseline}},
        "best": {str(layer): {task: {"c_sink": c_sink, "gain": 1.0} for task in baseline}},
    }


def test_equal_rest_coefficients_are_the_two_group_model(backbone, samples):
    layer = ORACLE_LAYERS[0]
    for c_sink in (0.0, 2.0):
        two = fixed_results(backbone, samples, layer, c_sink, batch_size=int(BATCH))
        three = split_results(backbone, samples, layer, (c_sink, 2.0 - c_sink, 2.0 - c_sink), batch_size=int(BATCH))
        assert answers(two) == answers(three)


def test_the_sweep_finds_the_planted_split(backbone, model_path, planted, tmp_path):
    from sinktrain.data.eval_set import read_eval_set

    data, layer, c_sink, pair = planted
    samples = read_eval_set(data)
    stage_one = stage_one_for(backbone, samples, layer, c_sink)
    result = split_rest_sweep(backbone, samples, stage_one, GRID, batch_size=int(BATCH))
    best = result["best"][str(layer)]["overall"]
    assert (best["c_sink"], best["c_lsink"], best["c_ordinary"]) == (c_sink, *pair) and best["accuracy"] == 100.0
    stage_one_accuracy = stage_one["layers"][str(layer)][f"{c_sink:g}"]["overall"]
    assert stage_one_accuracy < 100.0 and best["gain_over_stage_one"] == pytest.approx(100.0 - stage_one_accuracy)
    cells = result["layers"][str(layer)][f"{c_sink:g}"]
    assert len(cells) == len(GRID) ** 2 and cells[f"{2 - c_sink:g},{2 - c_sink:g}"] == stage_one["layers"][str(layer)][f"{c_sink:g}"]
    (tmp_path / "stage1.json").write_text(json.dumps(stage_one))
    out = tmp_path / "split.json"
    log = run_tool_here("oracle_sweep.py", "--model", model_path, "--data", data, "--split_rest", str(tmp_path / "stage1.json"),
                        "--steps", "3", "--batch_size", BATCH, "--out", str(out))
    assert json.loads(out.read_text())["best"] == result["best"] and "over stage 1" in log


def test_stage_two_needs_a_stage_one_result(backbone, samples):
    with pytest.raises(SinkTrainError, match="starts from a stage-1 oracle sweep"):
        split_rest_sweep(backbone, samples, {"stage": 2, "best": {}}, GRID)
