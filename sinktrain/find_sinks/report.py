"""What find_sink_dims.py prints: the summary table, candidate lists, and the built-in profiles.

    print(summary_table(profile))
    print(known_profiles_table())          # --print-known
    logger.warning(artefact_warning(layers, l_sinks_per_layer, tau_l, rms_norm))
"""

from __future__ import annotations

from sinktrain.backbones.profiles import KNOWN_LLM_PROFILES, KNOWN_VISION_PROFILES, SinkProfile

# How the built-in profile keys read in a table (the keys themselves live in backbones/profiles.py).
KNOWN_NAMES = {
    "clip-vit-l-14-336": "CLIP ViT-L/14-336 (LLaVA-1.5)",
    "siglip-so400m-14-384": "SigLIP-SO400M (LLaVA-OneVision)",
    "llama-2-7b": "LLaMA-2-7B / Vicuna-7B",
    "llama-2-13b": "LLaMA-2-13B",
    "qwen2-7b": "Qwen2-7B",
}


def rule_text(rule) -> str:
    magnitude = f" and >= {rule.min_magnitude:g}" if rule.min_magnitude else ""
    return (
        f">= {rule.min_ratio:g}x its layer's and its own median magnitude{magnitude} in >= {100 * rule.min_image_fraction:g}% of "
        f"images, on <= {100 * rule.max_token_fraction:g}% of tokens, in >= {100 * rule.min_layer_fraction:g}% of the "
        "layers from its first such layer on"
    )


def candidates_text(part) -> str:
    others = [c for c in part.channels if c.verdict != "sink"]
    if not others:
        return "none"
    return "; ".join(
        f"dim {c.dim}: {c.ratio:.0f}x the median at layer {c.layer} ({c.verdict})" for c in others
    )


def _range(stats: dict) -> str:
    gap = stats.get("gap")
    return f"{gap['lower']:.3g} .. {gap['upper']:.3g} ({gap['decades']:.2f} dec)" if gap else "-"


def summary_table(profile: SinkProfile) -> str:
    vit, llm = profile.stats["vit"], profile.stats["llm"]
    rows = [("part", "dims", "read at", "tau", "gap", "sinks")]
    rows.append((
        "ViT", str(profile.vit_dims), f"layer {profile.vit_layer}", f"{profile.tau_v:.4g}", _range(vit),
        f"{vit['sinks_per_image']:.3g}/image ({100 * vit['sink_token_fraction']:.2f}% of tokens)",
    ))
    if "l2_norm" in vit:  # DIYSink's rule on the same tensor
        l2 = vit["l2_norm"]
        rows.append((
            "ViT L2", "token norm", f"layer {profile.vit_layer}", f"{profile.tau_l2:.4g}" if profile.tau_l2 else "-", _range(l2),
            f"{l2['sinks_per_image']:.3g}/image (DIYSink's rule)" if profile.tau_l2 else "no gap",
        ))
    if "high_res" in profile.stats:  # DeepSeek-VL-Hybrid: the SAM branch, where the connector receives it
        high = profile.stats["high_res"]
        rows.append((
            "SAM", str(profile.high_res_dims), "connector input", f"{profile.tau_high_res:.4g}" if profile.tau_high_res else "-",
            _range(high), f"{high['sinks_per_image']:.3g}/image ({100 * high['sink_token_fraction']:.2f}% of tokens)"
            if profile.tau_high_res else "no sinks",
        ))
    if profile.llm_dims:
        per_layer = llm["l_sinks_per_layer"][llm["first_layer"]:]
        mean = sum(per_layer) / max(len(per_layer), 1)
        norm = " (RMSNorm)" if profile.llm_rms_norm else " (raw)"
        rows.append((
            "LLM", str(profile.llm_dims), f"layers {llm['first_layer']}+", f"{profile.tau_l:.4g}{norm}", _range(llm),
            f"{mean:.3g}/image/layer",
        ))
    else:
        rows.append(("LLM", "[]", "-", "-", "-", "no L-sinks"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
    min_ratio = profile.stats.get("rule", {}).get("min_ratio", 100.0)
    return "\n".join([table, *slot_lines(vit), *where_lines(llm, min_ratio), *artefact_lines(llm)])


def slot_lines(vit: dict) -> list[str]:
    if "sink_slots_per_image" not in vit:
        return []
    return [f"V-sink LLM slots (a slot merges several patches; a sink when any is): {vit['sink_slots_per_image']:.3g}/image"]


def where_lines(llm: dict, min_ratio: float) -> list[str]:
    """Where each LLM dim shows (peak >= min_ratio x the layer median), and its peak / median per
    token category: first token, delimiters, visual tokens, other text."""
    lines = []
    for dim, categories in llm.get("where", {}).items():
        shows = [name for name, c in categories.items() if c["x_median"] >= min_ratio]
        places = ", ".join(shows) if shows else f"no token category (none >= {min_ratio:g}x)"
        cells = ", ".join(f"{name} {c['x_median']:.3g}x (layer {c['layer']})" for name, c in categories.items())
        lines.append(f"LLM dim {dim} shows at: {places}; peak / layer median: {cells}")
    return lines


def artefact_lines(llm: dict) -> list[str]:
    layers = llm.get("threshold_artefact_layers")
    if not layers:
        return []
    return [f"LLM layers {layers}: L-sinks per image jump > 10x (threshold artefact? see the warning and l_sinks_per_layer.png)"]


def artefact_warning(layers: list[int], per_image: list[float], tau_l: float, rms_norm: bool) -> str:
    """Why a tenfold jump in L-sinks per layer is likely the threshold, not sinks, and what to do."""
    jumps = ", ".join(f"layer {l}: {per_image[l - 1]:.3g} -> {per_image[l]:.3g}" for l in layers)
    fix = "pass a higher --tau_l" if rms_norm else "read L-sinks RMS-normalised (--l_sink_values rms) or pass a higher --tau_l"
    return (
        f"L-sinks per image jump more than 10x over the previous layer at LLM layers {layers} ({jumps}): likely a "
        f"threshold artefact, not sinks. The residual norm grows in deep layers, so a fixed "
        f"{'RMS-normalised' if rms_norm else 'raw'} tau_L {tau_l:.4g} fires on ordinary tokens there (the LSG paper "
        f"reports this from L19 on for LLaVA-OneVision). Leave these layers out of L-sink use, or {fix}"
    )


def known_profiles_table() -> str:
    rows = [("model", "part", "sink dims (primary first)", "threshold")]
    for key, facts in KNOWN_VISION_PROFILES.items():
        dims = ", ".join(str(d) for d in facts["vit_dims"])
        rows.append((KNOWN_NAMES.get(key, key), f"vision, layer {facts['vit_layer']}", dims, f"tau_V {facts['tau_v']:g}"))
    for key, facts in KNOWN_LLM_PROFILES.items():
        dims = ", ".join(str(d) for d in facts["llm_dims"])
        mode = "RMSNorm" if facts["llm_rms_norm"] else "raw"
        rows.append((KNOWN_NAMES.get(key, key), "LLM", dims, f"tau_L {facts['tau_l']:g} ({mode})"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
