"""Qwen2-VL's and Qwen2.5-VL's slots. Dynamic resolution: an image becomes a (t, h, w) grid of
patches (``image_grid_thw``), the ViT runs on all patches of the batch as one flat sequence, and
the connector ``model.visual.merger`` concatenates 2x2 neighbours: one LLM slot per 4 patches, a
V-sink when any of its 4 is. Qwen2.5-VL's merger sees windows; the model un-permutes after it, and
so do we (with transformers' own window index). Position ids are M-RoPE (t, h, w) from the model's
``get_rope_index``, which needs ``mm_token_type_ids``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPatchMerger
from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger
from transformers.vision_utils import get_vision_window_index

from .slotted import SlottedModel


def is_qwen2_vl(config) -> bool:
    """Qwen2-VL rather than Qwen2.5-VL (an export's model_type is ``sinktrain_`` + the stock one)."""
    return config.model_type.removeprefix("sinktrain_") == "qwen2_vl"


def qwen_vision_width(config) -> int:
    """Channels of the merger's input (Qwen2-VL's vision ``hidden_size`` is the LLM's)."""
    vision = config.vision_config
    return vision.embed_dim if is_qwen2_vl(config) else vision.hidden_size


class QwenSlots(SlottedModel):
    connector_path = "model.visual.merger"
    vision_tower_path = "model.visual"

    @property
    def windowed(self) -> bool:
        return not is_qwen2_vl(self.model.config)

    @property
    def connector_group(self) -> int:
        return self.model.config.vision_config.spatial_merge_size ** 2

    def connector_module(self) -> nn.Module:
        config, vision = self.model.config, self.model.config.vision_config
        out = vision.hidden_size if is_qwen2_vl(config) else vision.out_hidden_size
        merger_class = PatchMerger if is_qwen2_vl(config) else Qwen2_5_VLPatchMerger
        return merger_class(dim=out, context_dim=qwen_vision_width(config), spatial_merge_size=vision.spatial_merge_size)

    def vision_call_inputs(self, args: tuple, kwargs: dict) -> dict:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)  # visual(pixel_values, grid_thw=...)
        return {"pixel_values": kwargs.get("hidden_states", args[0] if args else None), "image_grid_thw": grid}

    def slots_per_image(self, vision: dict, visual_slots: int) -> list[int]:
        return (vision["image_grid_thw"].prod(-1) // self.connector_group).tolist()

    def to_slot_order(self, per_token: torch.Tensor, vision: dict) -> torch.Tensor:
        if not self.windowed:
            return per_token
        config = self.model.config.vision_config
        window_index, _ = get_vision_window_index(vision["image_grid_thw"], config.spatial_merge_size, config.window_size, config.patch_size)
        return per_token[torch.argsort(window_index.to(per_token.device))]
