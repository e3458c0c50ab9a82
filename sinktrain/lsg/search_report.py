"""The layer search, written: per-layer, per-sub-task gains as Markdown and as a heatmap PNG.

    write_markdown(table, epoch, "search.md"); plot_gains(table, "heatmap.png")

Gains are percentage points over the stock model (score points for MME-like sums); the best
layer of every block of 4 (paper Table 1) is marked with *. The heatmap has one panel per epoch,
rows are layers, columns "benchmark: sub-task", and a diverging colour scale symmetric around 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from sinktrain.lsg.layer_search import OVERALL, best_per_block

matplotlib.use("Agg")  # files only: tools run on headless nodes
import matplotlib.pyplot as plt  # noqa: E402


def columns(table: dict) -> list[tuple[str, str]]:
    """(benchmark, sub-task) pairs in the stock table's order, each benchmark's overall last."""
    return [(name, task) for name, tasks in table["stock"].items() for task in [*(t for t in tasks if t != OVERALL), OVERALL]]


def gain_rows(table: dict, epoch: int) -> tuple[list[int], list[list[float]]]:
    layers = sorted(int(layer) for layer, epochs in table["layers"].items() if str(epoch) in epochs)
    cells = [[table["layers"][str(layer)][str(epoch)]["gains"][name][task] for name, task in columns(table)] for layer in layers]
    return layers, cells


def epochs_of(table: dict) -> list[int]:
    return sorted({int(epoch) for epochs in table["layers"].values() for epoch in epochs})


def markdown(table: dict, epoch: int) -> str:
    best = {row["layer"] for row in best_per_block(table, epoch)}
    header = ["layer", *(f"{name}: {task}" for name, task in columns(table))]
    stock = ["stock", *(f"{table['stock'][name][task]:.2f}" for name, task in columns(table))]
    layers, cells = gain_rows(table, epoch)
    body = [[f"{layer}{' *' if layer in best else ''}", *(f"{value:+.2f}" for value in row)] for layer, row in zip(layers, cells)]
    lines = [f"## LSG per-layer search: gains over the stock model at epoch {epoch}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cells_) + " |" for cells_ in [stock, *body]]
    lines += ["", "Stock row: scores; layer rows: gains (points). * the best layer of its block of 4 (paper Table 1):", ""]
    lines += [f"- layers {row['block']}: layer {row['layer']} ({row['mean_gain']:+.2f} mean overall gain)" for row in best_per_block(table, epoch)]
    return "\n".join(lines) + "\n"


def plot_gains(table: dict, path: str | Path) -> None:
    epochs, labels = epochs_of(table), [f"{name}: {task}" for name, task in columns(table)]
    panels = [gain_rows(table, epoch) for epoch in epochs]
    limit = max([abs(v) for _, cells in panels for row in cells for v in row] + [1.0])  # at least +-1 point
    rows = max(len(layers) for layers, _ in panels)
    figure, axes = plt.subplots(1, len(epochs), figsize=(2.5 + 0.8 * len(labels) * len(epochs), 1.8 + 0.35 * rows), squeeze=False)
    for axis, epoch, (layers, cells) in zip(axes[0], epochs, panels):
        image = axis.imshow(cells, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        axis.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=8)
        axis.set_title(f"epoch {epoch}")
        axis.set_ylabel("layer")
    figure.colorbar(image, ax=axes[0].tolist(), label="gain over stock (points)")
    figure.suptitle("LSG: single-layer gates, gain per sub-task")
    figure.savefig(path, dpi=100)
    plt.close(figure)
