"""What a ReW run writes: the MLP (``rew.safetensors``), what it reads (``rew.json``: sentence
encoder, widths, and the mean weights per category over the run), and ``rew_weights.png``, the
per-category bars the DIYSink paper plots (Sec. 4.2). Files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on headless nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from sinktrain.diysink.rew import ReWeighting  # noqa: E402
from sinktrain.train.checkpoint import replace_atomically  # noqa: E402
from sinktrain.train.zero import full_state  # noqa: E402

WEIGHTS, META, PLOT = "rew.safetensors", "rew.json", "rew_weights.png"


def save_rew(rew: ReWeighting, directory: Path, is_main: bool, plot: bool = False) -> None:
    """Gather the MLP (every rank takes part under ZeRO-3); rank 0 writes it with its metadata and
    the final weights per category (on the questions it saw), and with ``plot`` their bar chart."""
    state = full_state(rew.module)
    if not is_main:
        return
    weights = rew.weights_by_category(state)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "sentence_encoder": rew.encoder.name, "embedding_width": rew.encoder.width, "hidden": rew.module.mlp[0].out_features,
        "family": rew.backbone.family, "weights_by_category": weights,
    }
    replace_atomically(directory / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    replace_atomically(directory / META, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    if plot and weights:
        plot_weights(weights, directory / PLOT)


def plot_weights(weights: dict[str, dict[str, float]], path: Path) -> Path:
    names = list(weights)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names)), 3.5))
    ax.bar(x - 0.2, [weights[n]["w_sink"] for n in names], 0.4, label="w_sink", color="tab:red")
    ax.bar(x + 0.2, [weights[n]["w_non"] for n in names], 0.4, label="w_non", color="tab:blue")
    ax.axhline(1.0, color="grey", linestyle=":", label="start (plain DualMLP)")
    ax.set_xticks(x, names)
    ax.set(ylabel="mean ReW weight", title="ReW weights per category")
    ax.legend(fontsize=8)
    fig.tight_layout()
    replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path
