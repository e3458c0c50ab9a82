"""DeepSeek-VL's and DeepSeek-VL-Hybrid's slots. The ``aligner`` reads SigLIP's output after its
final LayerNorm, and each image fills a fixed number of slots, one per patch, in patch order.
Hybrid's aligner also takes a SAM tensor per token (resampled onto the same grid); which branch
defines V-sinks is the sink rule's ``sink_branch``: SigLIP alone (the default), SAM alone, or either.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.deepseek_vl.modeling_deepseek_vl import DeepseekVLAligner
from transformers.models.deepseek_vl_hybrid.modeling_deepseek_vl_hybrid import DeepseekVLHybridAligner

from .sinks import v_sink_mask
from .slotted import SlottedModel


def deepseek_image_slots(config) -> int:
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


class DeepseekVLSlots(SlottedModel):
    connector_path = "model.aligner"
    vision_tower_path = "model.vision_model"

    def connector_module(self) -> nn.Module:
        return DeepseekVLAligner(self.model.config)

    def slots_per_image(self, vision: dict, visual_slots: int) -> list[int]:
        return [deepseek_image_slots(self.model.config)] * vision["pixel_values"].shape[0]


class DeepseekVLHybridSlots(DeepseekVLSlots):
    def connector_module(self) -> nn.Module:
        return DeepseekVLHybridAligner(self.model.config)

    def token_sink_mask(self, features: torch.Tensor, *more_inputs: torch.Tensor) -> torch.Tensor:
        """V-sinks of the branch the rule names (``sink_branch``): SigLIP, SAM or either."""
        rule = self.sink_profile
        (high_res,) = more_inputs
        sinks = torch.zeros(features.shape[:-1], dtype=torch.bool, device=features.device)
        if rule.sink_branch in ("low_res", "either"):
            sinks |= v_sink_mask(features, rule.criterion, rule.tau_v, rule.vit_dims)
        if rule.sink_branch in ("high_res", "either"):
            sinks |= v_sink_mask(high_res, rule.criterion, rule.tau_high_res, rule.high_res_dims)
        return sinks.reshape(-1)
