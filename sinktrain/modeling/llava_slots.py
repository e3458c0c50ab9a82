"""LLaVA-1.5's slots: the projector ``model.multi_modal_projector`` reads the CLIP hidden state at
``vision_feature_layer`` (CLS dropped by the "default" strategy), and each image fills a fixed
number of slots (576 for LLaVA-1.5-7B), one per patch, in patch order."""

from __future__ import annotations

from torch import nn
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from .slotted import SlottedModel


def llava_image_slots(config) -> int:
    """Slots per image: one per patch, plus CLS when the projector reads the "full" sequence."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + (config.vision_feature_select_strategy == "full")


class LlavaSlots(SlottedModel):
    connector_path = "model.multi_modal_projector"
    vision_tower_path = "model.vision_tower"

    def connector_module(self) -> nn.Module:
        return LlavaMultiModalProjector(self.model.config)

    def slots_per_image(self, vision: dict, visual_slots: int) -> list[int]:
        return [llava_image_slots(self.model.config)] * vision["pixel_values"].shape[0]
