"""From reduced SinkStats to findings: sink dims, gaps, thresholds and token statistics per part.

    findings = analyse(stats.to_cpu(), Settings(rule=Rule(), read=23, criterion="dim_threshold"))
    findings.vit.dims, findings.tau_v, findings.llm.dims, findings.tau_l

LLM dims are chosen on every token (Sun et al.: massive activations show first at the first token
and at delimiters); tau_L and the L-sink counts then come from the visual tokens that are not
V-sinks, on the chosen dim that is largest there (it is listed first, as the primary): a dim
massive only at the first token must not hide the L-sinks of another. The user's ``--vit_dims/--llm_dims/--tau_v/--tau_l`` replace the corresponding choice;
everything else still comes from the statistics. Counts (sinks per image, L-sinks per layer) are
taken on the primary dim: the dims of one part fire on the same tokens in every known model, and
with tau in an empty gap of the primary dim's histogram they are exact for it.

``threshold_artefact_layers`` flags layers where the L-sink count jumps more than tenfold: the LSG
paper reports that on LLaVA-OneVision its raw tau_L fires on ordinary tokens from L19 on, as the
residual norm grows (L-sinks 1-5 per layer in L4-L18, then a threshold artefact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from sinktrain.find_sinks.select import Gap, PartResult, Rule, first_bin_at_or_above, select_part, widest_gap
from sinktrain.find_sinks.stats import SinkStats


@dataclass(frozen=True)
class Settings:
    rule: Rule
    read: int  # vision hidden-state index feeding the connector
    criterion: str = "dim_threshold"
    llm_rms_norm: bool = True
    vit_dims: list[int] | None = None
    llm_dims: list[int] | None = None
    tau_v: float | None = None
    tau_l: float | None = None
    # The vision layer where sink dims must be massive: ``read``, or the one before it where a
    # LayerNorm lies between the residual stream and the connector (DeepSeek-VL's post_layernorm:
    # a norm bounds every channel by its token's spread, so the massive rule reads its input;
    # tau_V is still set on the read tensor, the one the connector sees).
    persist: int | None = None
    high_res_dims: list[int] | None = None  # the user's dims / tau for a second branch (DeepSeek-VL-Hybrid's SAM)
    tau_high_res: float | None = None
    tau_l2: float | None = None  # the user's tau for DIYSink's L2-norm rule (proposed next to the dimension rule)

    @property
    def massive_at(self) -> int:
        return self.read if self.persist is None else self.persist


@dataclass
class Threshold:
    values: np.ndarray  # the histogram the threshold is chosen on (NUM_BINS counts)
    gap: Gap | None
    tau: float | None
    source: str  # "gap", "flag" (the user's) or "none"


@dataclass
class Findings:
    images: int
    vit: PartResult
    llm: PartResult
    v: Threshold
    l: Threshold | None  # None when no LLM dim is found
    llm_first_layer: int | None
    sinks_per_image: np.ndarray = field(default_factory=lambda: np.zeros(0))  # images with c V-sinks
    v_sink_tokens: int = 0
    slot_sinks_per_image: np.ndarray | None = None  # images with c V-sink slots (merging connectors)
    where: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (categories, L, D) LLM peaks per token category
    vit_tokens: int = 0  # visual tokens at the read layer
    l_sinks: list[int] = field(default_factory=list)  # per LLM layer
    llm_tokens: list[int] = field(default_factory=list)  # visual non-V-sink tokens per LLM layer
    artefact_layers: list[int] = field(default_factory=list)  # LLM layers whose L-sink count jumps > 10x
    high_res: "BranchFindings | None" = None  # a second vision branch (DeepSeek-VL-Hybrid's SAM)
    l2: "L2Findings | None" = None  # DIYSink's L2-norm rule on the same tensor, next to the dimension rule


@dataclass
class BranchFindings:
    """A second vision branch, measured on the one tensor the connector receives from it."""

    part: PartResult
    v: Threshold
    tokens: int
    sinks_per_image: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sink_tokens: int = 0


@dataclass
class L2Findings:
    """DIYSink's rule (token L2 norm >= tau) on the tensor the connector reads: the widest gap of the
    norm histogram, and the V-sinks per image it gives."""

    v: Threshold
    sinks_per_image: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sink_tokens: int = 0


def threshold(values: np.ndarray, override: float | None, max_token_fraction: float) -> Threshold:
    gap = widest_gap(values, max_token_fraction)
    if override is not None:
        return Threshold(values, gap, override, "flag")
    return Threshold(values, gap, gap.tau if gap else None, "gap" if gap else "none")


def read_threshold(layer_hist, read, dims: list[int], settings: Settings, override: float | None) -> Threshold:
    """tau on a tensor a connector receives: its primary dim's histogram (``layer_hist`` (D, B)),
    or the token L2 norms of ``read`` (ReadLayerStats) under the l2_norm criterion."""
    if settings.criterion == "l2_norm":
        values = read.norm_hist.numpy()
    elif dims:
        values = layer_hist[dims[0]].numpy()
    else:
        return Threshold(np.zeros(layer_hist.shape[-1], dtype=np.int64), None, None, "none")
    return threshold(values, override, settings.rule.max_token_fraction)


def vit_threshold(stats: SinkStats, vit: PartResult, settings: Settings) -> Threshold:
    return read_threshold(stats.vit.hist[settings.read], stats.read, vit.dims, settings, settings.tau_v)


def analyse_high_res(stats: SinkStats, settings: Settings) -> BranchFindings:
    """Dims, gap and V-sinks per image of the second branch (one layer: the connector's input).
    Finding none is a finding (the branch may carry no sinks), not an error."""
    part = select_part(stats.high_res, settings.rule, last=0, must_hold_at=0, forced=settings.high_res_dims)
    v = read_threshold(stats.high_res.hist[0], stats.high_res_read, part.dims, settings, settings.tau_high_res)
    branch = BranchFindings(part, v, int(stats.high_res.tokens[0]))
    if v.tau is not None:
        branch.sinks_per_image, branch.sink_tokens = sink_counts(v, stats.high_res_read, part.dims, settings.criterion)
    return branch


def analyse_l2(stats: SinkStats, settings: Settings) -> L2Findings:
    l2 = L2Findings(threshold(stats.read.norm_hist.numpy(), settings.tau_l2, settings.rule.max_token_fraction))
    if l2.v.tau is not None:
        l2.sinks_per_image, l2.sink_tokens = sink_counts(l2.v, stats.read, [], "l2_norm")
    return l2


def llm_values(stats: SinkStats, settings: Settings) -> np.ndarray:
    """(L, D, B): the LLM values L-sinks are thresholded on (weightless-RMSNormed or raw)."""
    chosen = stats.llm.normed if settings.llm_rms_norm else stats.llm.hist
    return chosen.numpy()


def per_image_counts(read, start: int, criterion: str, dim: int | None) -> np.ndarray:
    return (read.norm_per_image()[start] if criterion == "l2_norm" else read.per_image()[dim, start]).numpy()


def sink_counts(v: Threshold, read, dims: list[int], criterion: str) -> tuple[np.ndarray, int]:
    """Images with 0, 1, ... V-sinks, and V-sink tokens, at tau ``v.tau`` (on the values it was set on)."""
    start = first_bin_at_or_above(v.tau)
    return per_image_counts(read, start, criterion, dims[0] if dims else None), int(v.values[start:].sum())


def count_v_sinks(stats: SinkStats, findings: Findings, settings: Settings) -> None:
    findings.sinks_per_image, findings.v_sink_tokens = sink_counts(findings.v, stats.read, findings.vit.dims, settings.criterion)
    if stats.slots is not None:
        dim = findings.vit.dims[0] if findings.vit.dims else None
        findings.slot_sinks_per_image = per_image_counts(stats.slots, first_bin_at_or_above(findings.v.tau), settings.criterion, dim)


def count_l_sinks(values: np.ndarray, findings: Findings) -> None:
    start = first_bin_at_or_above(findings.l.tau)
    findings.l_sinks = [int(n) for n in values[:, findings.llm.dims[0], start:].sum(axis=-1)]


ARTEFACT_JUMP = 10.0  # "more than an order of magnitude" over the previous layer


def threshold_artefact_layers(l_sinks_per_layer: Sequence[float], floor: float = 0.1) -> list[int]:
    """Layers whose L-sinks per image exceed ARTEFACT_JUMP x the previous layer's, or x ``floor``
    where the previous layer has fewer (so a few L-sinks after a layer with none are no jump).

    Jumps count only after the onset (the first layer with any L-sink): L-sinks emerging where the
    sink dim becomes massive (VAR: from layer 2 on) are the sinks themselves, not an artefact.
    """
    counts = [float(n) for n in l_sinks_per_layer]
    onset = next((i for i, n in enumerate(counts) if n > 0), len(counts))
    return [layer for layer in range(onset + 1, len(counts)) if counts[layer] > ARTEFACT_JUMP * max(counts[layer - 1], floor)]


def visual_primary_first(stats: SinkStats, llm: PartResult) -> PartResult:
    """The chosen LLM dims with the one largest on visual non-V-sink tokens first (the others keep
    their order): tau_L is set on the primary dim's values there."""
    if len(llm.dims) < 2:
        return llm
    visual_peaks = stats.llm.peak[:, llm.dims].amax(dim=0).tolist()
    primary = llm.dims[max(range(len(llm.dims)), key=lambda i: (visual_peaks[i], -i))]
    dims = [primary] + [d for d in llm.dims if d != primary]
    chosen = [llm.channel(d) for d in dims]
    return PartResult(dims, chosen + [c for c in llm.channels if c.dim not in dims], llm.medians)


def analyse(stats: SinkStats, settings: Settings) -> Findings:
    rule = settings.rule
    vit = select_part(stats.vit, rule, last=settings.massive_at, must_hold_at=settings.massive_at, forced=settings.vit_dims)
    llm = select_part(stats.llm_all, rule, last=stats.llm_all.hist.shape[0] - 1, forced=settings.llm_dims)
    if settings.llm_dims is None:  # the user's dims keep the user's order
        llm = visual_primary_first(stats, llm)
    findings = Findings(
        images=int(stats.images), vit=vit, llm=llm, v=vit_threshold(stats, vit, settings), l=None, llm_first_layer=None,
        vit_tokens=int(stats.vit.tokens[settings.read]), llm_tokens=[int(n) for n in stats.llm.tokens],
        where=stats.where.numpy(),
    )
    if findings.v.tau is not None:
        count_v_sinks(stats, findings, settings)
    if stats.high_res is not None:
        findings.high_res = analyse_high_res(stats, settings)
    if settings.criterion == "dim_threshold" and stats.read.norm_hist is not None:
        findings.l2 = analyse_l2(stats, settings)
    if llm.dims:
        values = llm_values(stats, settings)
        first = llm.channel(llm.dims[0]).first_layer or 0  # a forced dim that is never massive: all layers
        findings.llm_first_layer = first
        findings.l = threshold(values[first:, llm.dims[0]].sum(axis=0), settings.tau_l, rule.max_token_fraction)
        if findings.l.tau is not None:
            count_l_sinks(values, findings)
            findings.artefact_layers = threshold_artefact_layers([n / max(findings.images, 1) for n in findings.l_sinks])
    return findings
