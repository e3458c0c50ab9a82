"""LSG's oracle sweep: fixed key coefficients per layer instead of a gate, accuracy per task.

    result = oracle_sweep(backbone, samples, layers=[1, 2, 3], grid=coefficient_grid(11))
    json.dump(result, ...); plot_best_gains(result, "oracle.png")   # sinktrain.lsg.oracle_plot

For one layer at a time, every visual V-sink key is scaled by ``c_sink`` and every other visual
key by ``c_rest = 2 - c_sink`` (paper: c_sink in {0.0, 0.2, ..., 2.0}). ``c_sink = 1`` is the
stock model (neutral means identical), so the baseline is evaluated once, without gates, and
reused for that grid point of every layer. A layer's best gain on a task is its best accuracy
over the grid minus the baseline; ties go to the c_sink nearest 1 (the smallest intervention),
so a task no coefficient helps shows gain 0 at c_sink 1.0.
"""

from __future__ import annotations

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.data.eval_set import EvalSample
from sinktrain.errors import SinkTrainError
from sinktrain.eval import Results, evaluate
from sinktrain.lsg.gating import check_layers
from sinktrain.lsg.scoped import scoped_gating

NEUTRAL = 1.0
PAPER_STEPS = 11  # 0.0, 0.2, ..., 2.0


def coefficient_grid(steps: int = PAPER_STEPS) -> list[float]:
    """``steps`` evenly spaced c_sink values from 0 to 2; odd, so that 1.0 (the baseline) is one."""
    if steps < 3 or steps % 2 == 0:
        raise SinkTrainError(
            f"--steps {steps}: use an odd number of at least 3, so the grid 0..2 contains the baseline c_sink 1.0 "
            f"({PAPER_STEPS} gives the paper's 0.0, 0.2, ..., 2.0; 3 gives 0, 1, 2)"
        )
    return [round(2.0 * i / (steps - 1), 6) for i in range(steps)]


def accuracies(results: Results) -> dict[str, float]:
    """{category: accuracy %}, "overall" included."""
    return {category: value["accuracy"] for category, value in results.per_category().items()}


def fixed_results(backbone: Backbone, samples: list[EvalSample], layer: int, c_sink: float, **eval_kwargs) -> Results:
    with scoped_gating(backbone, [layer], groups=2) as gating:
        gating.fixed[layer] = torch.tensor([c_sink, 2.0 - c_sink])
        return evaluate(backbone, samples, gating, **eval_kwargs)


def sweep_layer(backbone, samples, layer: int, grid: list[float], baseline: dict[str, float], **eval_kwargs) -> dict[str, dict]:
    """{c_sink as text: {category: accuracy %}} for one layer."""
    return {
        f"{c:g}": baseline if c == NEUTRAL else accuracies(fixed_results(backbone, samples, layer, c, **eval_kwargs))
        for c in grid
    }


def best_gains(sweep: dict[str, dict], baseline: dict[str, float]) -> dict[str, dict]:
    """{category: {"c_sink": best, "gain": pp over baseline}} for one layer's sweep."""
    best = {}
    for category, base in baseline.items():
        c_best = max(sweep, key=lambda c: (sweep[c][category], -abs(float(c) - NEUTRAL)))
        best[category] = {"c_sink": float(c_best), "gain": sweep[c_best][category] - base}
    return best


def oracle_sweep(backbone: Backbone, samples: list[EvalSample], layers: list[int], grid: list[float], **eval_kwargs) -> dict:
    """The JSON-ready sweep: grid, baseline, per layer and c_sink the accuracies, and best gains."""
    if NEUTRAL not in grid:
        raise SinkTrainError(f"the c_sink grid {grid} lacks the baseline 1.0; build it with coefficient_grid(steps)")
    check_layers(layers, len(backbone.decoder_layers()))  # before the baseline run, not after it
    baseline = accuracies(evaluate(backbone, samples, **eval_kwargs))
    sweeps = {str(layer): sweep_layer(backbone, samples, layer, grid, baseline, **eval_kwargs) for layer in layers}
    return {
        "grid": grid,
        "samples": len(samples),
        "categories": list(baseline),
        "baseline": baseline,
        "layers": sweeps,
        "best": {layer: best_gains(sweep, baseline) for layer, sweep in sweeps.items()},
    }
