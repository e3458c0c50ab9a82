"""The PNGs find_sink_dims.py writes next to the profile (matplotlib, no display needed).

    paths = write_plots(stats, findings, settings, out_dir)

* ``activations.png``: per layer, the three largest channel magnitudes and the median magnitude,
  vision tower and LLM (as in "Massive Activations in LLMs", Sun et al. 2024, Fig. 1/2);
* ``histogram.png``: the log-magnitude histogram of the primary sink dim with the threshold and
  the empty gap it sits in (as in LSG Fig. S1), vision tower and LLM, and the vision tokens' L2
  norms with the tau proposed for DIYSink's rule;
* ``sinks_per_image.png``: how many images have 0, 1, 2, ... V-sinks;
* with a second vision branch (DeepSeek-VL-Hybrid's SAM), its histogram and sinks per image too;
* ``l_sinks_per_layer.png``: L-sinks per image at every LLM layer; layers where the count jumps
  more than tenfold (``Findings.artefact_layers``, likely the threshold, not sinks) in red.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on headless nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sinktrain.find_sinks.analyse import Findings, Settings, Threshold  # noqa: E402
from sinktrain.find_sinks.bins import edges  # noqa: E402
from sinktrain.find_sinks.select import PartResult  # noqa: E402
from sinktrain.find_sinks.stats import PartStats, SinkStats  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _activations_panel(ax, part: PartStats, result: PartResult, title: str, mark: int | None, mark_label: str) -> None:
    peaks = np.sort(part.peak.numpy(), axis=1)[:, ::-1]
    layers = np.arange(peaks.shape[0])
    for k, style in zip(range(min(3, peaks.shape[1])), ("o-", "s-", "^-")):
        ax.plot(layers, np.maximum(peaks[:, k], 1e-6), style, label=f"top {k + 1}")
    ax.plot(layers, np.maximum(result.medians, 1e-6), "k--", label="median")
    if mark is not None:
        ax.axvline(mark, color="grey", linestyle=":", label=mark_label)
    dims = f" (sink dims {result.dims})" if result.dims else " (no sink dim)"
    ax.set(yscale="log", xlabel="layer (hidden-state index)", ylabel="|activation|", title=title + dims)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)


def plot_activations(stats: SinkStats, findings: Findings, settings: Settings, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _activations_panel(left, stats.vit, findings.vit, "vision tower", settings.read, "feeds the connector")
    _activations_panel(right, stats.llm_all, findings.llm, "LLM, every token (raw)", findings.llm_first_layer, "first sink layer")
    return _save(fig, path)


def _histogram_panel(ax, threshold: Threshold | None, title: str) -> None:
    if threshold is None or not threshold.values.any():
        ax.text(0.5, 0.5, "no sink dim", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return
    bounds = edges()
    used = np.flatnonzero(threshold.values)
    low, high = max(used[0] - 2, 0), min(used[-1] + 3, len(bounds) - 1)
    ax.stairs(threshold.values[low:high], bounds[low : high + 1], fill=True, color="tab:blue")
    if threshold.gap is not None:
        ax.axvspan(threshold.gap.lower, threshold.gap.upper, color="tab:green", alpha=0.15, label="empty gap")
    if threshold.tau is not None:
        ax.axvline(threshold.tau, color="tab:red", label=f"tau = {threshold.tau:.3g}")
    ax.set(xscale="log", yscale="log", xlabel="|activation|", ylabel="tokens", title=title)
    if threshold.gap is not None or threshold.tau is not None:  # otherwise nothing is labelled
        ax.legend(fontsize=8)


def _subject(settings: Settings, dims: list[int]) -> str:
    return "token L2 norm" if settings.criterion == "l2_norm" else f"dim {dims[0] if dims else '-'}"


def plot_histogram(findings: Findings, settings: Settings, path: Path) -> Path:
    """Vision tower (its sink dim, and the token L2 norms DIYSink's rule reads) and LLM; with a
    second vision branch (Hybrid's SAM), a panel for it."""
    panels = [(findings.v, f"vision tower, {_subject(settings, findings.vit.dims)}, layer {settings.read}")]
    if findings.l2 is not None:
        panels.append((findings.l2.v, f"vision tower, token L2 norm (DIYSink), layer {settings.read}"))
    norm = "RMS-normalised" if settings.llm_rms_norm else "raw"
    llm_subject = f"dim {findings.llm.dims[0]}, layers {findings.llm_first_layer}+" if findings.llm.dims else "-"
    panels.append((findings.l, f"LLM, {llm_subject} ({norm})"))
    if findings.high_res:
        panels.append((findings.high_res.v, f"SAM branch at the connector, {_subject(settings, findings.high_res.part.dims)}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
    for ax, (threshold, title) in zip(axes, panels):
        _histogram_panel(ax, threshold, title)
    return _save(fig, path)


def plot_sinks_per_image(findings: Findings, path: Path) -> Path:
    """V-sinks per image; with a second vision branch, SigLIP's and SAM's side by side."""
    series = [("SigLIP" if findings.high_res else "V-sinks", findings.sinks_per_image, "tab:blue")]
    if findings.high_res is not None:
        series.append(("SAM", findings.high_res.sinks_per_image, "tab:purple"))
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    width = 0.8 / len(series)
    for k, (label, counts, colour) in enumerate(series):
        counts = np.trim_zeros(np.asarray(counts, dtype=float), "b")
        if counts.size:
            ax.bar(np.arange(counts.size) + k * width - 0.4 + width / 2, counts, width, color=colour, label=label)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="V-sinks in the image", ylabel="images", title=f"V-sinks per image ({findings.images} images)")
    return _save(fig, path)


ARTEFACT_COLOR = "tab:red"


def plot_l_sinks_per_layer(findings: Findings, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    if findings.l_sinks:
        per_image = np.asarray(findings.l_sinks, dtype=float) / max(findings.images, 1)
        bars = ax.bar(np.arange(per_image.size), per_image, color="tab:orange")
        for layer in findings.artefact_layers:
            bars[layer].set_color(ARTEFACT_COLOR)
        if findings.artefact_layers:
            bars[findings.artefact_layers[0]].set_label(f"jump > 10x: threshold artefact? (layers {findings.artefact_layers})")
            ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="LLM layer", ylabel="L-sinks per image", title="L-sinks per layer (visual tokens, V-sinks excluded)")
    return _save(fig, path)


def write_plots(stats: SinkStats, findings: Findings, settings: Settings, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_activations(stats, findings, settings, out_dir / "activations.png"),
        plot_histogram(findings, settings, out_dir / "histogram.png"),
        plot_sinks_per_image(findings, out_dir / "sinks_per_image.png"),
        plot_l_sinks_per_layer(findings, out_dir / "l_sinks_per_layer.png"),
    ]
