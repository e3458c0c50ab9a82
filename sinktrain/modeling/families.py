"""Which slot map serves which stock ``model_type`` (sinktrain.backbones.registry adds the data side)."""

from __future__ import annotations

from .deepseek_slots import DeepseekVLHybridSlots, DeepseekVLSlots
from .llava_slots import LlavaSlots
from .onevision_slots import OneVisionSlots
from .qwen_slots import QwenSlots
from .slotted import SlottedModel

SLOT_MAPS: dict[str, type[SlottedModel]] = {
    "llava": LlavaSlots,
    "llava_onevision": OneVisionSlots,
    "qwen2_vl": QwenSlots,
    "qwen2_5_vl": QwenSlots,
    "deepseek_vl": DeepseekVLSlots,
    "deepseek_vl_hybrid": DeepseekVLHybridSlots,
}
