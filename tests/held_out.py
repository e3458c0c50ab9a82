"""The held-out demo loss the LSG recipe tests compare stock and gated models on."""

import torch

from sinktrain.data.encode import decode_image
from sinktrain.data.scenes import demo_samples

HELD_OUT_SAMPLES, HELD_OUT_SEED = 512, 7  # not the training shards' seed (0) nor the eval set's (1)


def held_out_loss(backbone, gating=None) -> tuple[float, dict]:
    """Mean answer-token loss of one batch of fresh demo conversations (first turn only), and
    the gates' mean r_sink per layer on it."""
    encoder = backbone.encoder()
    examples = [
        dict(encoder.encode(record["conversations"][:2], [decode_image(png)] if png else []), reader=0, index=0, bad=0)
        for record, png in demo_samples(HELD_OUT_SAMPLES, seed=HELD_OUT_SEED)
    ]
    batch, _ = backbone.collator()(examples)
    with torch.no_grad():
        loss = backbone.forward(batch).loss.item()
    ratios = {layer: r[:, 0].mean().item() for layer, r in gating.last_ratios.items()} if gating else {}
    return loss, ratios
