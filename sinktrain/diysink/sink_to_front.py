"""Training-free sink-to-front (DIYSink, "To Sink or Not to Sink", Sec. 4): on a stock model, each
image's V-sink slots go to the front of its slots, then its other slots, each token with its own
position ids; no weight changes and nothing is trained.

    sink_to_front(backbone)     # every later forward and generate() of backbone.model

The order is the one DIYSink's DualMLP trains with (sinktrain.backbones.slots.sink_first_order),
applied where the LLM receives its inputs; an image without V-sinks keeps its order.
"""

from __future__ import annotations

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.slots import sink_first_order
from sinktrain.errors import SinkTrainError


def sink_to_front(backbone: Backbone) -> None:
    """Put each image's V-sink slots first in every later forward of ``backbone``."""
    if sink_first_order in backbone.slots.orderers:
        raise SinkTrainError("V-sinks are already put first on this backbone (sink_to_front or a DualMLP with sink_first)")
    backbone.slots.orderers.append(sink_first_order)
