"""Greedy stacking of independently trained gates (LSG paper Table 2), and merging gate checkpoints.

    sets = read_gate_sets(["runs/l10/gates", "runs/l3/gates", "runs/l7/gates"])
    result = greedy_stack(backbone, samples, sets)         # JSON-ready table, one row per step
    save_gate_set(merge_gate_sets(chosen_sets(result, sets, keep="best")), "runs/stack/")

Each input is evaluated alone; inputs are then ordered by their gain over the stock baseline
(overall accuracy; ties by layer index) and added one by one, the accumulated set evaluated after
every addition (the paper's stack for LLaVA-1.5-7B: L10, L3, L7, L19, L6). Merging is a plain
union: gate files key every tensor by its layer (``10.up.weight``), so independent single-layer
files never collide; inputs must agree on backbone family, hidden size, layer count and groups,
and no layer may come twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.data.eval_set import EvalSample
from sinktrain.errors import SinkTrainError
from sinktrain.eval import Results, evaluate
from sinktrain.lsg.gate_file import GateMeta, check_fits, read_gates, save_gates
from sinktrain.lsg.scoped import scoped_gating

KEEP = ("best", "all")


@dataclass
class GateSet:
    source: str
    state: dict[str, torch.Tensor]
    meta: GateMeta


def read_gate_sets(directories: list[str]) -> list[GateSet]:
    return [GateSet(str(d), *read_gates(d)) for d in directories]


def label(layers: list[int]) -> str:
    return "+".join(f"L{layer}" for layer in layers)


def model_shape(meta: GateMeta) -> tuple:
    return meta.family, meta.hidden_size, meta.num_layers, meta.groups, meta.scale_layout_slots


def check_stackable(sets: list[GateSet]) -> None:
    if not sets:
        raise SinkTrainError("no gate checkpoints to stack; pass --gates DIR [DIR ...] (each from recipes/lsg_train.py)")
    first = sets[0]
    for other in sets[1:]:
        if model_shape(other.meta) != model_shape(first.meta):
            raise SinkTrainError(
                f"gates in {other.source} (family, hidden size, layers, groups, newline slots scaled = {model_shape(other.meta)}) and in {first.source} "
                f"({model_shape(first.meta)}) were trained for different models or group counts; stack gates of one model only"
            )
    owner: dict[int, str] = {}
    for gate_set in sets:
        for layer in gate_set.meta.layers:
            if layer in owner:
                raise SinkTrainError(
                    f"layer {layer} is gated by both {owner[layer]} and {gate_set.source}; pass one checkpoint per layer"
                )
            owner[layer] = gate_set.source


def merge_gate_sets(sets: list[GateSet]) -> GateSet:
    """One gate set holding every input's gates: union of tensors and of layers."""
    check_stackable(sets)
    state = {name: tensor for gate_set in sets for name, tensor in gate_set.state.items()}
    layers = sorted(layer for gate_set in sets for layer in gate_set.meta.layers)
    return GateSet(" + ".join(s.source for s in sets), state, replace(sets[0].meta, layers=layers))


def save_gate_set(gate_set: GateSet, directory: str | Path) -> None:
    save_gates(directory, gate_set.state, gate_set.meta)


Scorer = Callable[[object], Results]  # gating (None: the stock model) -> results


def evaluate_set(backbone: Backbone, gate_set: GateSet, score: Scorer) -> Results:
    meta = gate_set.meta
    with scoped_gating(backbone, meta.layers, meta.groups, gate_set.state, meta.scale_layout_slots) as gating:
        return score(gating)


def row(step: int, layers: list[int], results: Results, baseline: Results) -> dict:
    per_category = {c: v["accuracy"] for c, v in results.per_category().items()}
    base = {c: v["accuracy"] for c, v in baseline.per_category().items()}
    return {
        "step": step,
        "layers": layers,
        "label": label(layers) or "stock",
        "accuracy": results.accuracy(),
        "gain": results.accuracy() - baseline.accuracy(),
        "per_category": per_category,
        "gain_per_category": {c: per_category[c] - base.get(c, 0.0) for c in per_category},
    }


def greedy_stack(backbone: Backbone, samples: list[EvalSample] | None, sets: list[GateSet], score: Scorer | None = None, **eval_kwargs) -> dict:
    """Stack ``sets`` greedily, scoring by exact match on ``samples``, or by ``score`` (e.g. the
    benchmarks' own rules: sinktrain.lsg.layer_search.benchmark_scorer)."""
    check_stackable(sets)
    for gate_set in sets:
        check_fits(gate_set.meta, backbone, gate_set.source)  # before any evaluation, not after an hour of it
    score = score or (lambda gating: evaluate(backbone, samples, gating, **eval_kwargs))
    baseline = score(None)
    singles = [evaluate_set(backbone, s, score) for s in sets]
    order = sorted(range(len(sets)), key=lambda i: (-singles[i].accuracy(), sets[i].meta.layers))
    steps = [row(0, [], baseline, baseline)]
    for step in range(1, len(order) + 1):
        chosen = merge_gate_sets([sets[i] for i in order[:step]])
        results = singles[order[0]] if step == 1 else evaluate_set(backbone, chosen, score)
        steps.append(row(step, chosen.meta.layers, results, baseline))
    return {
        "samples": len(baseline.predictions),
        "singles": [row(1, s.meta.layers, r, baseline) | {"source": s.source} for s, r in zip(sets, singles)],
        "order": [sets[i].source for i in order],
        "steps": steps,
    }


def best_step(result: dict) -> dict:
    """The stacked step (>= 1) with the highest overall accuracy; ties to the fewest layers."""
    return max(result["steps"][1:], key=lambda r: (r["accuracy"], -r["step"]))


def chosen_sets(result: dict, sets: list[GateSet], keep: str) -> list[GateSet]:
    if keep not in KEEP:
        raise SinkTrainError(f"--keep {keep!r}: use 'best' (the best stacked step) or 'all' (every layer)")
    count = best_step(result)["step"] if keep == "best" else len(sets)
    by_source = {s.source: s for s in sets}
    return [by_source[source] for source in result["order"][:count]]
