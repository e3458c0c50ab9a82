"""The streaming pass: this rank's images through the backbone once, statistics summed over ranks.

    stats = collect(backbone, items, vflag, batch_size=8, template="v1", device="cuda")

Memory beyond the model is the fixed-size SinkStats (layers x channels x bins) plus one batch.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable


from sinktrain.backbones.base import Backbone
from sinktrain.find_sinks.capture import SinkCapture, VSinkFlag, read_index
from sinktrain.find_sinks.images import Item, PromptEncoder, batched
from sinktrain.find_sinks.stats import SinkStats
from sinktrain.find_sinks.tokens import delimiter_table

logger = logging.getLogger("sinktrain")
LOG_EVERY_S = 30.0


def empty_stats(backbone: Backbone, device, normed: bool = True, norms: bool = False) -> SinkStats:
    read = read_index(backbone.sink_profile.vit_layer, len(backbone.vision_layers()))
    return SinkStats.empty(
        vit_layers=read + 1,  # hidden states 0 .. the one feeding the connector
        vit_width=backbone.vision_width,
        llm_layers=len(backbone.decoder_layers()),
        llm_width=backbone.llm_width,
        device=device,
        normed=normed,
        norms=norms,
        slots=backbone.connector_group > 1,
        high_res_width=backbone.high_res_width,
    )


def collect(
    backbone: Backbone,
    items: Iterable[Item],
    vflag: VSinkFlag,
    batch_size: int,
    template: str,
    device,
    normed: bool = True,
    norms: bool = False,
) -> SinkStats:
    """``normed``: also RMS-normalised LLM values; ``norms``: token L2 norm statistics (the l2_norm
    criterion, or DIYSink's tau proposed beside the dimension rule)."""
    stats = empty_stats(backbone, device, normed, norms)
    encode = PromptEncoder(backbone, template)
    dtype = next(backbone.model.parameters()).dtype
    seen, last_log = 0, time.monotonic()
    delimiters = delimiter_table(backbone.tokenizer, backbone.image_token_id)
    with SinkCapture(backbone, stats, vflag, delimiters) as capture:
        for chunk in batched(items, batch_size):
            input_ids, attention_mask, vision = encode(chunk)
            vision = {k: v.to(device, dtype if v.is_floating_point() else None) for k, v in vision.items()}
            capture.run(input_ids.to(device), attention_mask.to(device), vision)
            seen += len(chunk)
            if time.monotonic() - last_log > LOG_EVERY_S:
                logger.info("find_sink_dims: %d images on this rank so far", seen)
                last_log = time.monotonic()
    stats.reduce()
    return stats
