"""Load a backbone to profile: like ``registry.load_backbone`` but without needing a sink profile.

    backbone = load_unprofiled("llava-hf/llava-1.5-7b-hf", dtype=torch.bfloat16)

The profile is what find_sink_dims.py is about to write, so the backbone gets a provisional one that
only says which vision layer feeds the connector (``vision_feature_layer``); nothing reads sinks
from it. A model directory's own sink_profile.json is ignored for the same reason.
"""

from __future__ import annotations

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.profiles import SinkProfile
from sinktrain.backbones.registry import backbone_class, load_backbone, load_config
from sinktrain.errors import SinkTrainError


def feature_layer(family, config) -> int:
    layer = family.feature_layer(config)
    if not isinstance(layer, int):
        raise SinkTrainError(
            f"vision_feature_layer {layer!r} feeds the connector from several layers; find_sink_dims.py reads one, "
            "so set a single layer in the model config"
        )
    return layer


def provisional_profile(config) -> SinkProfile:
    family = backbone_class(config)  # unsupported architectures fail before anything is loaded
    return SinkProfile(
        name="unprofiled", vision_tower=family.vision_tower_id(config), vit_dims=[], vit_layer=feature_layer(family, config),
        criterion="l2_norm", tau_v=float("inf"),
    )


def load_unprofiled(model: str, dtype: torch.dtype = torch.float32) -> Backbone:
    config = load_config(model)
    backbone = load_backbone(model, dtype=dtype, profile=provisional_profile(config))
    backbone.model.eval().requires_grad_(False)
    return backbone
