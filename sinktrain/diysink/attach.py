"""Put a DualMLP connector into a backbone: both projectors start from the backbone's own.

``f_non`` keeps the backbone's connector module itself; ``f_sink`` is a new module of the same
shape (born partitioned under ZeRO-3) with the same weights, or both are loaded from
``--connector_init`` (``connector.safetensors`` from stage-1 pretraining,
sinktrain.diysink.connector_file). With ``sink_first`` each image's V-sink slots go first (with
their own position ids), DIYSink's order.
"""

from __future__ import annotations

from sinktrain.backbones.base import Backbone
from sinktrain.diysink.connector_file import load_connector_weights
from sinktrain.modeling.connector import DualMLPConnector
from sinktrain.modeling.diysink import dual_mlp_connector, sink_to_front
from sinktrain.train.zero import copy_parameters


def attach_dual_mlp(backbone: Backbone, sink_first: bool = True, connector_init: str | None = None) -> DualMLPConnector:
    f_sink = backbone.new_connector()
    connector = dual_mlp_connector(backbone, f_sink)
    copy_parameters(connector.f_non, f_sink)
    if connector_init:
        load_connector_weights(backbone, connector, connector_init)
    backbone.connector = connector
    if sink_first:
        sink_to_front(backbone)
    return connector
