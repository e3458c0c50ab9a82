"""Put a DualMLP connector into a backbone: both projectors start from the backbone's own.

``f_non`` keeps the backbone's connector module itself; ``f_sink`` is a new module of the same
shape (born partitioned under ZeRO-3) with the same weights, or both are loaded from
``--connector_init`` (a safetensors file with ``f_sink.*`` / ``f_non.*`` keys, e.g. from
stage-1 connector pretraining). With ``sink_first`` each image's V-sink slots go first (with
their own position ids), DIYSink's order.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from sinktrain.backbones.base import Backbone
from sinktrain.diysink.connector import DualMLPConnector
from sinktrain.diysink.sink_to_front import sink_to_front
from sinktrain.errors import SinkTrainError
from sinktrain.train.zero import copy_parameters, load_state


def attach_dual_mlp(backbone: Backbone, sink_first: bool = True, connector_init: str | None = None) -> DualMLPConnector:
    projector = backbone.connector
    if isinstance(projector, DualMLPConnector):
        raise SinkTrainError("this backbone already has a DualMLP connector; attach it once")
    f_sink = backbone.new_connector()
    copy_parameters(projector, f_sink)
    connector = DualMLPConnector(f_sink, projector, backbone.token_sink_mask, backbone.connector_group)
    if connector_init:
        load_connector_weights(connector, connector_init)
    backbone.connector = connector
    if sink_first:
        sink_to_front(backbone)
    return connector


def load_connector_weights(connector: DualMLPConnector, path: str) -> None:
    if not Path(path).is_file():
        raise SinkTrainError(f"--connector_init {path} does not exist; pass a safetensors file with f_sink.* and f_non.* weights")
    state = load_file(path)
    expected = {name for name, _ in connector.named_parameters()}
    if set(state) != expected:
        raise SinkTrainError(
            f"--connector_init {path} holds keys {sorted(state)[:4]}..., expected {sorted(expected)}; "
            "save it from a DualMLP connector of this backbone (stage-1 pretraining writes one)"
        )
    # copy_ broadcasts, so a wrong shape could load silently; ds_shape is the full shape under ZeRO-3.
    wrong = [
        f"{name} {list(state[name].shape)} (expected {list(getattr(p, 'ds_shape', p.shape))})"
        for name, p in connector.named_parameters()
        if tuple(state[name].shape) != tuple(getattr(p, "ds_shape", p.shape))
    ]
    if wrong:
        raise SinkTrainError(
            f"--connector_init {path} has tensors of the wrong shape: {', '.join(wrong)}; "
            "save it from a DualMLP connector of this backbone (stage-1 pretraining writes one)"
        )
    load_state(connector, state)
