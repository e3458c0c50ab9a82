"""DIYSink on a slotted model ("To Sink or Not to Sink", Secs. 4-5): the DualMLP connector around
the model's own projector, and sinks first.

    connector = dual_mlp_connector(slotted, f_sink)   # f_non: the model's projector itself
    slotted.connector = connector
    sink_to_front(slotted)                            # each image's V-sink slots first

``sink_to_front`` alone, on a stock model, is the training-free sink-to-front (Sec. 4): each
image's V-sink slots go to the front of its slots, then its other slots, each token with its own
position ids; no weight changes. The order is the one DIYSink's DualMLP trains with
(slots.sink_first_order), applied where the LLM receives its inputs; an image without V-sinks
keeps its order.
"""

from __future__ import annotations

from torch import nn

from .connector import DualMLPConnector
from .errors import SinkTrainError
from .slots import sink_first_order
from .slotted import SlottedModel


def dual_mlp_connector(slotted: SlottedModel, f_sink: nn.Module) -> DualMLPConnector:
    """A DualMLP whose ``f_non`` is the model's current connector and ``f_sink`` a module of its shape."""
    projector = slotted.connector
    if isinstance(projector, DualMLPConnector):
        raise SinkTrainError("this model already has a DualMLP connector; attach it once")
    return DualMLPConnector(f_sink, projector, slotted.token_sink_mask, slotted.connector_group)


def sink_to_front(slotted: SlottedModel) -> None:
    """Put each image's V-sink slots first in every later forward of ``slotted.model``."""
    if sink_first_order in slotted.slots.orderers:
        raise SinkTrainError("V-sinks are already put first on this model (sink_to_front or a DualMLP with sink_first)")
    slotted.slots.orderers.append(sink_first_order)
