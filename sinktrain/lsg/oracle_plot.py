"""The oracle sweep as a heatmap (paper Fig. S4): layers x tasks, colour = best gain over baseline.

    plot_best_gains(result, "oracle.png")     # result: sinktrain.lsg.oracle.oracle_sweep(...)

Each cell is annotated with its best c_sink and the gain in percentage points. The colour scale
is diverging and symmetric around 0, so "no gain" is the same neutral colour in every plot. The
figure size follows from the table's shape alone (``heatmap_size``): no tight bounding box.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: tools run on headless nodes
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100
CELL_W, CELL_H = 0.9, 0.5  # inches per task column / layer row: room for "c 0.4\n+12.5"
MARGIN_W, MARGIN_H = 2.4, 1.3  # inches for labels, title and colour bar


def heatmap_size(num_layers: int, num_tasks: int) -> tuple[int, int]:
    """Pixel (width, height) of the PNG for a sweep over ``num_layers`` layers and ``num_tasks`` tasks."""
    return round((MARGIN_W + CELL_W * num_tasks) * DPI), round((MARGIN_H + CELL_H * num_layers) * DPI)


def gain_matrix(result: dict) -> tuple[list[str], list[str], list[list[dict]]]:
    layers, tasks = list(result["best"]), result["categories"]
    return layers, tasks, [[result["best"][layer][task] for task in tasks] for layer in layers]


def plot_best_gains(result: dict, path: str | Path) -> None:
    layers, tasks, cells = gain_matrix(result)
    gains = [[cell["gain"] for cell in row] for row in cells]
    limit = max([abs(g) for row in gains for g in row] + [1.0])  # at least +-1 pp, so all-zero is not a blank scale
    width, height = heatmap_size(len(layers), len(tasks))
    figure, axes = plt.subplots(figsize=(width / DPI, height / DPI), dpi=DPI)
    image = axes.imshow(gains, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for row, layer_cells in enumerate(cells):
        for column, cell in enumerate(layer_cells):
            colour = "white" if abs(cell["gain"]) > 0.6 * limit else "black"  # readable on the dark ends
            axes.text(column, row, f"c {cell['c_sink']:g}\n{cell['gain']:+.1f}", ha="center", va="center", fontsize=8, color=colour)
    axes.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    axes.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers])
    axes.set_title(f"oracle sweep: best gain (pp) over baseline, n={result['samples']}", fontsize=9)
    figure.colorbar(image, ax=axes, label="gain (pp)")
    figure.subplots_adjust(left=0.8 / (width / DPI), bottom=0.75 / (height / DPI), top=1 - 0.35 / (height / DPI))
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
