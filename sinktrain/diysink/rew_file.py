"""What a ReW run writes: the MLP (``rew.safetensors``), what it reads (``rew.json``: sentence
encoder, widths, and the mean weights per category over the run), and ``rew_weights.png``, the
per-category bars the DIYSink paper plots (Sec. 4.2). Files are written atomically;
``load_rew`` puts them back on a DualMLP model (tools/evaluate.py --method diysink_rew).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on headless nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from sinktrain.diysink.rew import ReWeighting  # noqa: E402
from sinktrain.diysink.sentence import SentenceEncoder  # noqa: E402
from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.train.checkpoint import replace_atomically  # noqa: E402
from sinktrain.train.zero import full_state  # noqa: E402

WEIGHTS, META, PLOT = "rew.safetensors", "rew.json", "rew_weights.png"


def save_rew(rew: ReWeighting, directory: Path, is_main: bool, plot: bool = False) -> None:
    """Gather the MLP and its input statistics (every rank takes part under ZeRO-3); rank 0 writes
    them with their metadata and the final weights per category (on the questions it saw), and with
    ``plot`` their bar chart."""
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


def load_rew(backbone, directory: str | Path, sentence_encoder: str | None = None, device: str = "cpu") -> ReWeighting:
    """The ReW MLP of a run's ``rew/`` directory on ``backbone`` (which has its DualMLP already),
    with the sentence encoder it was trained with (or ``sentence_encoder``, e.g. a local copy)."""
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / META).is_file():
        raise SinkTrainError(f"{directory} holds no ReW ({WEIGHTS} and {META}); pass the rew/ directory of a recipes/diysink_rew.py run")
    meta = json.loads((directory / META).read_text())
    if meta.get("family") != backbone.family:
        raise SinkTrainError(f"{directory} was trained on a {meta.get('family')} model, this one is {backbone.family}; pass that run's --model")
    encoder = SentenceEncoder(sentence_encoder or meta["sentence_encoder"], device)
    if encoder.width != meta["embedding_width"]:
        raise SinkTrainError(f"--sentence_encoder {encoder.name} gives {encoder.width}-wide embeddings, the ReW MLP takes {meta['embedding_width']}")
    rew = ReWeighting(backbone, encoder, meta["hidden"])
    rew.module.load_state_dict(load_file(str(directory / WEIGHTS)))
    return rew


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
