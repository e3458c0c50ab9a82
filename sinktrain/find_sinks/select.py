"""Choosing sink dimensions and thresholds from reduced SinkStats (pure numpy, no model).

    rule = Rule(min_ratio=100)
    vit = select_part(stats.vit, rule, last_layer=read, must_hold_at=read)
    gap = widest_gap(stats.vit.hist[read, vit.dims[0]].numpy(), rule.max_token_fraction)

The rule is Sun et al.'s massive activations made scale-aware (their "> 100" is for 7B models):
in layer l, channel d is *massive* in an image when its largest magnitude there reaches
``min_ratio`` x the layer's median magnitude and ``min_ratio`` x the channel's own median there (a
spike, not a channel that is large on every token), and ``min_magnitude`` (off by default). A sink
dimension is massive

* in at least ``min_image_fraction`` of the images (sinks recur across inputs),
* on at most ``max_token_fraction`` of the tokens (sinks are few: a channel large on every token
  is an offset, not a sink),
* in at least ``min_layer_fraction`` of the layers from its first massive layer on (sinks persist
  in the residual stream), and, for the vision tower, at the layer that feeds the connector (or
  at the input of a final LayerNorm that lies in between, as in DeepSeek-VL).

Thresholds sit in the widest empty gap of the log-magnitude histogram of the primary (most
massive) dim, above the bulk's median and below at most ``max_token_fraction`` of the tokens; tau
is the gap's geometric middle, so every token on either side is classified the same at any tau in
the gap. Medians, gaps and counts are read from bins (~9% wide, sinktrain/find_sinks/bins.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sinktrain.find_sinks.bins import bin_of_value, bins_of_values, centre, edges, median_bin
from sinktrain.find_sinks.stats import PartStats

TOP_CANDIDATES = 5  # non-sink channels listed as the best candidates


@dataclass(frozen=True)
class Rule:
    min_ratio: float = 100.0
    min_image_fraction: float = 0.5
    min_layer_fraction: float = 0.5
    max_token_fraction: float = 0.1
    min_magnitude: float = 0.0


@dataclass
class Channel:
    """The evidence on one channel, at its most massive layer."""

    dim: int
    ratio: float  # largest magnitude / that layer's median magnitude
    layer: int  # where that ratio peaks
    image_fraction: float  # images with a massive token in that layer
    token_fraction: float  # tokens massive in that layer
    first_layer: int | None  # first layer where the channel is massive (all conditions)
    layer_fraction: float  # massive layers / layers from first_layer on
    verdict: str  # "sink" or why not


@dataclass
class PartResult:
    dims: list[int]  # sink dims, primary first
    channels: list[Channel]  # the sink dims, then the best other candidates
    medians: list[float]  # median magnitude per layer

    def channel(self, dim: int) -> Channel:
        return next(c for c in self.channels if c.dim == dim)


@dataclass(frozen=True)
class Gap:
    low_bin: int  # first empty bin
    high_bin: int  # first occupied bin above the gap

    @property
    def lower(self) -> float:
        return float(edges()[self.low_bin])

    @property
    def upper(self) -> float:
        return float(edges()[self.high_bin])

    @property
    def decades(self) -> float:
        return math.log10(self.upper / self.lower)

    @property
    def tau(self) -> float:
        return math.sqrt(self.lower * self.upper)


def above_each_bin(counts: np.ndarray) -> np.ndarray:
    """counts (..., B) -> how many are at or above each bin."""
    return counts[..., ::-1].cumsum(axis=-1)[..., ::-1]


def layer_medians(part: PartStats) -> np.ndarray:
    per_layer = part.hist.sum(dim=1).numpy()
    return np.array([centre(median_bin(row)) if row.sum() else 0.0 for row in per_layer])


def channel_medians(cumulative: np.ndarray) -> np.ndarray:
    """(L, D) median magnitude of every channel in every layer, from (L, D, B) cumulative counts."""
    middle = (cumulative < cumulative[..., -1:] / 2.0).sum(axis=-1)
    centres = np.sqrt(edges()[:-1] * edges()[1:])
    return centres[np.minimum(middle, len(centres) - 1)]


def at_or_above(cumulative: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(L, D): counts at or above bin ``levels`` (L, D), from (L, D, B) cumulative counts."""
    below = np.take_along_axis(cumulative, np.maximum(levels - 1, 0)[..., None], axis=-1)[..., 0]
    return cumulative[..., -1] - np.where(levels > 0, below, 0)


def massive_levels(medians: np.ndarray, channels: np.ndarray, rule: Rule) -> np.ndarray:
    """(L, D): the first bin that counts as massive in each layer and channel."""
    return bins_of_values(np.maximum(rule.min_ratio * np.maximum(medians[:, None], channels), rule.min_magnitude))


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)


def evidence(part: PartStats, rule: Rule, medians: np.ndarray) -> dict[str, np.ndarray]:
    """(L, D) arrays: ratios, image and token fractions, and whether each (layer, dim) is massive."""
    token_cumulative = part.hist.numpy().cumsum(axis=-1, dtype=np.int64)
    channels = channel_medians(token_cumulative)
    levels = massive_levels(medians, channels, rule)
    images = max(int(part_images(part)), 1)
    image_above = at_or_above(part.image_max.numpy().cumsum(axis=-1, dtype=np.int64), levels)
    token_above = at_or_above(token_cumulative, levels)
    tokens = np.maximum(part.tokens.numpy(), 1)[:, None]
    peak = part.peak.numpy().astype(np.float64)
    image_fraction, token_fraction = image_above / images, token_above / tokens
    massive = (image_fraction >= rule.min_image_fraction) & (token_fraction <= rule.max_token_fraction) & (token_above > 0)
    return {
        "ratio": safe_ratio(peak, np.broadcast_to(medians[:, None], peak.shape)),
        "channel_ratio": safe_ratio(peak, channels),
        "image_fraction": image_fraction,
        "token_fraction": token_fraction,
        "massive": massive,
    }


def part_images(part: PartStats) -> int:
    """Images counted: every image adds one count per channel to image_max (layer 0, channel 0)."""
    return int(part.image_max[0, 0].sum())


def judge(dim: int, ev: dict[str, np.ndarray], rule: Rule, last: int, must_hold_at: int | None) -> Channel:
    ratio = ev["ratio"][: last + 1, dim]
    layer = int(np.argmax(ratio))
    massive = ev["massive"][: last + 1, dim]
    first = int(np.argmax(massive)) if massive.any() else None
    fraction = float(massive[first:].mean()) if first is not None else 0.0
    image_fraction, token_fraction = float(ev["image_fraction"][layer, dim]), float(ev["token_fraction"][layer, dim])
    if first is None:
        channel_ratio = float(ev["channel_ratio"][layer, dim])
        if ratio[layer] < rule.min_ratio:
            verdict = "below --min_ratio"
        elif channel_ratio < rule.min_ratio:
            verdict = f"only {channel_ratio:.0f}x its own median: large on every token, an offset, not sinks"
        elif image_fraction < rule.min_image_fraction:
            verdict = f"massive in only {100 * image_fraction:.0f}% of images"
        elif token_fraction > rule.max_token_fraction:
            verdict = f"massive on {100 * token_fraction:.0f}% of tokens (an offset, not sinks)"
        else:
            verdict = f"below --min_magnitude {rule.min_magnitude:g}"
    elif fraction < rule.min_layer_fraction:
        verdict = f"massive in only {100 * fraction:.0f}% of the layers from {first} on"
    elif must_hold_at is not None and not massive[must_hold_at]:
        verdict = f"not massive at layer {must_hold_at}, which feeds the connector"
    else:
        verdict = "sink"
    return Channel(dim, float(ratio[layer]), layer, image_fraction, token_fraction, first, fraction, verdict)


def select_part(part: PartStats, rule: Rule, last: int, must_hold_at: int | None = None, forced: list[int] | None = None) -> PartResult:
    """Sink dims of one part from layers 0..last (``forced``: the user's dims, judged but kept)."""
    medians = layer_medians(part)
    ev = evidence(part, rule, medians)
    channels = [judge(d, ev, rule, last, must_hold_at) for d in range(part.hist.shape[1])]
    by_ratio = sorted(channels, key=lambda c: (-c.ratio, c.dim))
    if forced is not None:
        chosen = [channels[d] for d in forced]
    else:
        chosen = [c for c in by_ratio if c.verdict == "sink"]
    others = [c for c in by_ratio if c not in chosen][:TOP_CANDIDATES]
    return PartResult([c.dim for c in chosen], chosen + others, medians.tolist())


def widest_gap(counts: np.ndarray, max_token_fraction: float) -> Gap | None:
    """The widest run of empty bins above the median with at most that fraction of tokens above it."""
    occupied = np.flatnonzero(counts)
    if len(occupied) < 2:
        return None
    total, middle = counts.sum(), median_bin(counts)
    above = above_each_bin(counts)
    best: Gap | None = None
    for below, over in zip(occupied[:-1], occupied[1:]):
        if over - below < 2 or below < middle or above[over] > max_token_fraction * total:
            continue
        gap = Gap(int(below) + 1, int(over))
        if best is None or gap.decades > best.decades:
            best = gap
    return best


def first_bin_at_or_above(tau: float) -> int:
    """The first bin whose every value is >= tau (counts from there on are 'at or above tau')."""
    index = bin_of_value(tau)
    return index if edges()[index] >= tau else index + 1
