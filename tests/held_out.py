"""What the LSG recipe tests read back: the held-out demo loss they compare stock and gated
models on, and the gates' r_sink at the first step."""

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sinktrain.data.encode import decode_image
from sinktrain.data.scenes import demo_samples

HELD_OUT_SAMPLES, HELD_OUT_SEED = 512, 7  # not the training shards' seed (0) nor the eval set's (1)


def held_out_loss(backbone, gating=None) -> tuple[float, dict]:
    """Mean answer-token loss of one batch of fresh demo conversations (first turn only), and
    the gates' mean r_sink per layer on it."""
    encoder = backbone.encoder()
    examples = [
        dict(encoder.encode(record["conversations"][:2], [decode_image(png)] if png else []), lane=0, index=0, bad=0)
        for record, png in demo_samples(HELD_OUT_SAMPLES, seed=HELD_OUT_SEED)
    ]
    batch, _ = backbone.collator()(examples)
    with torch.no_grad():
        loss = backbone.forward(batch).loss.item()
    ratios = {layer: r[:, 0].mean().item() for layer, r in gating.last_ratios.items()} if gating else {}
    return loss, ratios


def r_sink_events(output_dir) -> EventAccumulator:
    """A run's TensorBoard events with every r_sink histogram kept."""
    return EventAccumulator(str(output_dir / "tensorboard" / "sinktrain"), size_guidance={"histograms": 0}).Reload()


def check_gates_started_neutral(events: EventAccumulator, layers) -> None:
    """At step 1 every gate gives r_sink exactly 1/2 on every sample (a uniform softmax: the
    gated model starts as the stock one), also under ZeRO-3, where the gates are born partitioned."""
    for layer in layers:
        first = events.Histograms(f"lsg/r_sink/layer_{layer}")[0]
        assert first.step == 1 and first.histogram_value.min == first.histogram_value.max == 0.5, (layer, first)
