"""From reduced SinkStats to findings: sink dims, gaps, thresholds and token statistics per part.

    findings = analyse(stats.to_cpu(), Settings(rule=Rule(), read=23, criterion="dim_threshold"))
    findings.vit.dims, findings.tau_v, findings.llm.dims, findings.tau_l

The user's ``--vit_dims/--llm_dims/--tau_v/--tau_l`` replace the corresponding choice; everything
else still comes from the statistics. Counts (sinks per image, L-sinks per layer) are taken on
the primary dim: the dims of one part fire on the same tokens in every known model, and with tau
in an empty gap of the primary dim's histogram they are exact for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    vit_tokens: int = 0  # visual tokens at the read layer
    l_sinks: list[int] = field(default_factory=list)  # per LLM layer
    llm_tokens: list[int] = field(default_factory=list)  # visual non-V-sink tokens per LLM layer


def threshold(values: np.ndarray, override: float | None, max_token_fraction: float) -> Threshold:
    gap = widest_gap(values, max_token_fraction)
    if override is not None:
        return Threshold(values, gap, override, "flag")
    return Threshold(values, gap, gap.tau if gap else None, "gap" if gap else "none")


def vit_threshold(stats: SinkStats, vit: PartResult, settings: Settings) -> Threshold:
    if settings.criterion == "l2_norm":
        values = stats.read.norm_hist.numpy()
    elif vit.dims:
        values = stats.vit.hist[settings.read, vit.dims[0]].numpy()
    else:
        return Threshold(np.zeros(stats.vit.hist.shape[-1], dtype=np.int64), None, None, "none")
    return threshold(values, settings.tau_v, settings.rule.max_token_fraction)


def llm_values(stats: SinkStats, settings: Settings) -> np.ndarray:
    """(L, D, B): the LLM values L-sinks are thresholded on (weightless-RMSNormed or raw)."""
    chosen = stats.llm.normed if settings.llm_rms_norm else stats.llm.hist
    return chosen.numpy()


def count_v_sinks(stats: SinkStats, findings: Findings, settings: Settings) -> None:
    start = first_bin_at_or_above(findings.v.tau)
    if settings.criterion == "l2_norm":
        findings.sinks_per_image = stats.read.norm_per_image()[start].numpy()
        findings.v_sink_tokens = int(stats.read.norm_hist[start:].sum())
    else:
        findings.sinks_per_image = stats.read.per_image()[findings.vit.dims[0], start].numpy()
        findings.v_sink_tokens = int(stats.vit.hist[settings.read, findings.vit.dims[0], start:].sum())


def count_l_sinks(values: np.ndarray, findings: Findings) -> None:
    start = first_bin_at_or_above(findings.l.tau)
    findings.l_sinks = [int(n) for n in values[:, findings.llm.dims[0], start:].sum(axis=-1)]


def analyse(stats: SinkStats, settings: Settings) -> Findings:
    rule = settings.rule
    vit = select_part(stats.vit, rule, last=settings.read, must_hold_at=settings.read, forced=settings.vit_dims)
    llm = select_part(stats.llm, rule, last=stats.llm.hist.shape[0] - 1, forced=settings.llm_dims)
    findings = Findings(
        images=int(stats.images), vit=vit, llm=llm, v=vit_threshold(stats, vit, settings), l=None, llm_first_layer=None,
        vit_tokens=int(stats.vit.tokens[settings.read]), llm_tokens=[int(n) for n in stats.llm.tokens],
    )
    if findings.v.tau is not None:
        count_v_sinks(stats, findings, settings)
    if llm.dims:
        values = llm_values(stats, settings)
        first = llm.channel(llm.dims[0]).first_layer or 0  # a forced dim that is never massive: all layers
        findings.llm_first_layer = first
        findings.l = threshold(values[first:, llm.dims[0]].sum(axis=0), settings.tau_l, rule.max_token_fraction)
        if findings.l.tau is not None:
            count_l_sinks(values, findings)
    return findings
