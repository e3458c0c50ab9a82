"""Put a DualMLP connector into a backbone: both projectors start from the backbone's own.

``f_non`` keeps the backbone's connector module itself; ``f_sink`` is a new module of the same
shape (born partitioned under ZeRO-3) with the same weights, or both are loaded from
``--connector_init`` (``connector.safetensors`` from stage-1 pretraining,
sinktrain.diysink.connector_file). With ``sink_first`` each image's V-sink slots go first (with
their own position ids), DIYSink's order.
"""

from __future__ import annotations

from sinktrain.backbones.base import Backbone
from sinktrain.diysink.connector import DualMLPConnector
from sinktrain.diysink.connector_file import load_connector_weights
from sinktrain.diysink.sink_to_front import sink_to_front
from sinktrain.errors import SinkTrainError
from sinktrain.train.zero import copy_parameters


def attach_dual_mlp(backbone: Backbone, sink_first: bool = True, connector_init: str | None = None) -> DualMLPConnector:
    projector = backbone.connector
    if isinstance(projector, DualMLPConnector):
        raise SinkTrainError("this backbone already has a DualMLP connector; attach it once")
    f_sink = backbone.new_connector()
    copy_parameters(projector, f_sink)
    connector = DualMLPConnector(f_sink, projector, backbone.token_sink_mask, backbone.connector_group)
    if connector_init:
        load_connector_weights(backbone, connector, connector_init)
    backbone.connector = connector
    if sink_first:
        sink_to_front(backbone)
    return connector
