"""Findings -> the SinkProfile every recipe reads, with gap bounds and token statistics in ``stats``.

    check_found(findings, settings)          # SinkTrainError: "no sink dimension found ..."
    profile, notes = build_profile(findings, settings, Identity(...), name="llava-1.5-7b")

Numbers in ``stats`` are rounded to 4 significant digits: the profile is meant to be read, and
rounding keeps it byte-identical however the images were split over ranks and batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sinktrain.backbones.profiles import SinkProfile
from sinktrain.errors import SinkTrainError
from sinktrain.find_sinks.analyse import Findings, Settings, Threshold
from sinktrain.find_sinks.report import candidates_text, rule_text
from sinktrain.find_sinks.select import PartResult
from sinktrain.find_sinks.tokens import CATEGORY_NAMES


@dataclass(frozen=True)
class Identity:
    """What the profile says about the backbone it was made on."""

    vision_tower: str
    vit_layer: int  # vision_feature_layer
    hidden_size_vit: int
    hidden_size_llm: int
    hidden_size_high_res: int | None = None  # DeepSeek-VL-Hybrid's SAM branch at the connector


def sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def check_found(findings: Findings, settings: Settings) -> None:
    """Refuse to write a profile without V-sinks: say so, with the best candidates, never invent one."""
    if settings.criterion == "dim_threshold" and not findings.vit.dims:
        raise SinkTrainError(
            f"no sink dimension found in the vision tower over {findings.images} images: no channel is "
            f"{rule_text(settings.rule)}. Best candidates: {candidates_text(findings.vit)}. If this backbone "
            "has V-sinks, lower --min_ratio / --min_image_fraction or add images; if you know them, pass "
            "--vit_dims and --tau_v"
        )
    if findings.v.tau is None:
        subject = f"dim {findings.vit.dims[0]}" if settings.criterion == "dim_threshold" else "the token L2 norms"
        raise SinkTrainError(
            f"the values of {subject} at the layer feeding the connector have no empty gap between ordinary and "
            "sink tokens, so no threshold separates them; pass --tau_v (look at the histogram plot), or more images"
        )


def gap_stats(threshold: Threshold) -> dict | None:
    gap = threshold.gap
    if gap is None:
        return None
    return {"lower": sig(gap.lower), "upper": sig(gap.upper), "decades": sig(gap.decades, 3)}


def channel_stats(part: PartResult) -> tuple[list[dict], list[dict]]:
    def one(channel) -> dict:
        data = asdict(channel)
        return {k: sig(v) if isinstance(v, float) else v for k, v in data.items() if k != "verdict" or v != "sink"}

    chosen = [one(part.channel(d)) for d in part.dims]
    others = [one(c) for c in part.channels if c.dim not in part.dims]
    return chosen, others


def part_stats(part: PartResult, threshold: Threshold | None) -> dict:
    dims, candidates = channel_stats(part)
    data = {"median_per_layer": [sig(m) for m in part.medians], "dims": dims, "candidates": candidates}
    if threshold is not None:
        data.update(gap=gap_stats(threshold), tau_source=threshold.source)
    return data


def per_image_histogram(counts: np.ndarray) -> list[int]:
    """Images with 0, 1, ... V-sinks (the last entry also holds every larger count), trailing zeros cut."""
    values = [int(n) for n in counts]
    while len(values) > 1 and values[-1] == 0:
        values.pop()
    return values


def where_stats(findings: Findings) -> dict:
    """Per LLM dim and token category: its peak magnitude, over which layer, and x that layer's median."""
    medians = np.maximum(findings.llm.medians, 1e-12)
    report = {}
    for dim in findings.llm.dims:
        report[str(dim)] = {}
        for category, name in enumerate(CATEGORY_NAMES):
            ratios = findings.where[category, :, dim] / medians
            layer = int(ratios.argmax())
            report[str(dim)][name] = {"peak": sig(float(findings.where[category, layer, dim])), "x_median": sig(float(ratios[layer])), "layer": layer}
    return report


def sink_count_stats(sink_tokens: int, per_image: np.ndarray, tokens: int, images: int) -> dict:
    """V-sinks per image (mean and histogram) and their share of the tokens at the read tensor."""
    return dict(
        sinks_per_image=sig(sink_tokens / images), sinks_per_image_histogram=per_image_histogram(per_image),
        sink_token_fraction=sig(sink_tokens / max(tokens, 1)),
    )


def branch_stats(findings: Findings) -> dict:
    """The second vision branch (SAM), measured where the connector receives it."""
    branch = findings.high_res
    data = part_stats(branch.part, branch.v)
    data.update(sink_count_stats(branch.sink_tokens, branch.sinks_per_image, branch.tokens, max(findings.images, 1)))
    return data


def stats_dict(findings: Findings, settings: Settings, identity: Identity, keep_llm: bool) -> dict:
    images = max(findings.images, 1)
    vit = part_stats(findings.vit, findings.v)
    vit.update(read_layer_index=settings.read, **sink_count_stats(findings.v_sink_tokens, findings.sinks_per_image, findings.vit_tokens, images))
    if findings.slot_sinks_per_image is not None:  # a merging connector: V-sinks per LLM slot too
        slots = findings.slot_sinks_per_image
        vit.update(
            sink_slots_per_image=sig(float((np.arange(len(slots)) * slots).sum()) / images),
            sink_slots_per_image_histogram=per_image_histogram(slots),
        )
    llm = part_stats(findings.llm, findings.l if keep_llm else None)
    llm["values"] = "rms_normalized" if settings.llm_rms_norm else "raw"
    llm["dims_chosen_on"] = "every token"
    llm["where"] = where_stats(findings)
    if keep_llm:
        llm.update(
            first_layer=findings.llm_first_layer,
            l_sinks_per_layer=[sig(n / images) for n in findings.l_sinks],
            l_sink_token_fraction_per_layer=[sig(n / max(t, 1)) for n, t in zip(findings.l_sinks, findings.llm_tokens)],
            threshold_artefact_layers=list(findings.artefact_layers),
        )
    data = {
        "tool": "tools/find_sink_dims.py",
        "images": findings.images,
        "visual_tokens_per_image": sig(findings.vit_tokens / images),
        "rule": {k: sig(v) for k, v in asdict(settings.rule).items()},
        "vit": vit,
        "llm": llm,
    }
    if findings.high_res is not None:
        data["high_res"] = branch_stats(findings)
    if findings.l2 is not None:  # DIYSink's rule, proposed next to the dimension rule
        l2 = findings.l2
        vit["l2_norm"] = {"gap": gap_stats(l2.v), "tau_source": l2.v.source}
        if l2.v.tau is not None:
            vit["l2_norm"].update(sink_count_stats(l2.sink_tokens, l2.sinks_per_image, findings.vit_tokens, images))
    return data


def high_res_facts(findings: Findings, identity: Identity) -> dict:
    """A Hybrid profile's SAM-branch fields: dims and tau when its V-sinks separate, else none."""
    branch = findings.high_res
    if branch is None:
        return {}
    found = branch.v.tau is not None
    return dict(
        high_res_dims=list(branch.part.dims) if found else [], tau_high_res=sig(branch.v.tau) if found else None,
        hidden_size_high_res=identity.hidden_size_high_res,
    )


def build_profile(findings: Findings, settings: Settings, identity: Identity, name: str) -> tuple[SinkProfile, list[str]]:
    """The profile plus notes for the user (e.g. why the LLM dims were left out)."""
    check_found(findings, settings)
    notes: list[str] = []
    keep_llm = bool(findings.llm.dims) and findings.l is not None and findings.l.tau is not None
    if not findings.llm.dims:
        notes.append(f"no LLM sink dimension found (L-sinks left out). Best candidates: {candidates_text(findings.llm)}")
    elif not keep_llm:
        notes.append(
            f"LLM dims {findings.llm.dims} have no empty gap between ordinary and sink tokens, so L-sinks are left out "
            "of the profile; pass --tau_l to keep them"
        )
    profile = SinkProfile(
        name=name,
        vision_tower=identity.vision_tower,
        vit_dims=list(findings.vit.dims),
        vit_layer=identity.vit_layer,
        criterion=settings.criterion,
        tau_v=sig(findings.v.tau),
        tau_l2=sig(findings.l2.v.tau) if findings.l2 is not None and findings.l2.v.tau is not None else None,
        llm_dims=list(findings.llm.dims) if keep_llm else [],
        tau_l=sig(findings.l.tau) if keep_llm else None,
        llm_rms_norm=settings.llm_rms_norm,
        hidden_size_vit=identity.hidden_size_vit,
        hidden_size_llm=identity.hidden_size_llm,
        stats=stats_dict(findings, settings, identity, keep_llm),
        **high_res_facts(findings, identity),
    )
    if findings.l2 is not None and findings.l2.v.tau is None:
        notes.append(
            "the token L2 norms have no empty gap between ordinary and sink tokens, so no tau_l2 is proposed for "
            "DIYSink's rule (its recipes then use the dimension rule); pass --tau_l2 to set one"
        )
    if findings.high_res is not None and not profile.high_res_dims and profile.tau_high_res is None:
        notes.append(f"no SAM-branch sink found (V-sinks come from SigLIP). Best candidates: {candidates_text(findings.high_res.part)}")
    return profile, notes
