"""LSG's oracle sweep, stage 2 ("When Sinks Help or Hurt", Sec. 3.4 and Appendix C.3): the rest
group split into L-sinks and ordinary visual tokens.

    stage_one = oracle_sweep(backbone, samples, layers, coefficient_grid(11))   # sinktrain.lsg.oracle
    stage_two = split_rest_sweep(backbone, samples, stage_one, coefficient_grid(5))

For every layer of stage 1 and every task whose best stage-1 gain is positive (the paper leaves
the others out), the V-sink coefficient stays at that task's stage-1 optimum c_sink and the two
coefficients of the rest, c_lsink (L-sinks at this layer) and c_ordinary, are swept independently:
every pair of the grid, 3 key groups. The pair (2 - c_sink, 2 - c_sink) is stage 1's model exactly,
so its accuracies are taken from stage 1. Per task, the best pair (ties: the one nearest stage 1's,
the smallest change) and its gain over stage 1 and over the stock model. Tasks that share a c_sink
at a layer share one sweep. Cost: grid points squared minus one evaluations per (layer, c_sink).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.data.eval_set import EvalSample
from sinktrain.errors import SinkTrainError
from sinktrain.eval import Results, evaluate
from sinktrain.lsg.gating import check_groups
from sinktrain.lsg.oracle import accuracies
from sinktrain.lsg.scoped import scoped_gating


def split_results(backbone: Backbone, samples: list[EvalSample], layer: int, coefficients: tuple[float, float, float], **eval_kwargs) -> Results:
    """Evaluation with fixed 3-group key coefficients (c_sink, c_lsink, c_ordinary) at one layer."""
    with scoped_gating(backbone, [layer], groups=3) as gating:
        gating.fixed[layer] = torch.tensor(coefficients)
        return evaluate(backbone, samples, gating, **eval_kwargs)


def tasks_by_c_sink(best: dict[str, dict]) -> dict[float, list[str]]:
    """{stage-1 c_sink: [tasks]} over the tasks with a positive stage-1 gain."""
    groups: dict[float, list[str]] = defaultdict(list)
    for task, row in best.items():
        if row["gain"] > 0:
            groups[row["c_sink"]].append(task)
    return dict(groups)


def pair_key(c_lsink: float, c_ordinary: float) -> str:
    return f"{c_lsink:g},{c_ordinary:g}"


def sweep_pairs(backbone, samples, layer: int, c_sink: float, grid: list[float], stage_one_cell: dict, **eval_kwargs) -> dict[str, dict]:
    """{"c_lsink,c_ordinary": {task: accuracy %}} at one layer with c_sink fixed."""
    rest = round(2.0 - c_sink, 6)
    cells = {}
    for c_lsink in grid:
        for c_ordinary in grid:
            same_as_stage_one = c_lsink == rest and c_ordinary == rest
            cells[pair_key(c_lsink, c_ordinary)] = stage_one_cell if same_as_stage_one else accuracies(
                split_results(backbone, samples, layer, (c_sink, c_lsink, c_ordinary), **eval_kwargs)
            )
    return cells


def best_pair(cells: dict[str, dict], task: str, rest: float) -> tuple[float, float]:
    def rank(key: str):
        c_lsink, c_ordinary = map(float, key.split(","))
        return cells[key][task], -(abs(c_lsink - rest) + abs(c_ordinary - rest))

    return tuple(map(float, max(cells, key=rank).split(",")))


def split_rest_sweep(backbone: Backbone, samples: list[EvalSample], stage_one: dict, grid: list[float], **eval_kwargs) -> dict:
    """The JSON-ready stage 2 of an oracle sweep (``stage_one``: sinktrain.lsg.oracle.oracle_sweep's result)."""
    check_groups(3, backbone)  # L-sinks need the profile's LLM sink dims: say so before any evaluation
    if stage_one.get("stage", 1) != 1 or "best" not in stage_one:
        raise SinkTrainError("stage 2 starts from a stage-1 oracle sweep's JSON (tools/oracle_sweep.py without --split_rest)")
    layers, best = {}, {}
    for layer, tasks in stage_one["best"].items():
        sweeps = {}
        for c_sink, chosen in sorted(tasks_by_c_sink(tasks).items()):
            rest = round(2.0 - c_sink, 6)
            cell = stage_one["layers"][layer][f"{c_sink:g}"]
            cells = sweep_pairs(backbone, samples, int(layer), c_sink, grid, cell, **eval_kwargs)
            sweeps[f"{c_sink:g}"] = cells
            for task in chosen:
                c_lsink, c_ordinary = best_pair(cells, task, rest)
                accuracy = cells[pair_key(c_lsink, c_ordinary)][task]
                best.setdefault(layer, {})[task] = {
                    "c_sink": c_sink, "c_lsink": c_lsink, "c_ordinary": c_ordinary, "accuracy": accuracy,
                    "gain_over_stage_one": accuracy - cell[task], "gain": accuracy - stage_one["baseline"][task],
                }
        layers[layer] = sweeps
    return {"stage": 2, "grid": grid, "samples": len(samples), "baseline": stage_one["baseline"], "layers": layers, "best": best}
