"""Qwen2-VL and Qwen2.5-VL on transformers' own classes (no vendored modeling code).

Dynamic resolution: an image becomes a (t, h, w) grid of patches (``image_grid_thw``), the ViT
runs on all patches of the batch as one flat sequence, and the connector ``model.visual.merger``
normalises each patch, concatenates 2x2 neighbours and projects them: one LLM slot per 4 patches.
So V-sinks are read per patch on the merger's input and a slot is a V-sink when any of its 4
patches is. Qwen2.5-VL runs its blocks in window order and the merger sees windows too; the
model un-permutes after the merger, and so do we (with transformers' own window index). Position
ids are M-RoPE (t, h, w) from the model's ``get_rope_index``, which needs ``mm_token_type_ids``.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.profiles import SinkProfile
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.qwen_slots import QwenSlots, qwen_vision_width

MERGER_INPUT = -1  # the merger reads the last vision block's output


class QwenImageInputs:
    """Qwen's dynamic-resolution image inputs (picklable, no model): pixels per patch, grids, slots."""

    def __init__(self, image_processor):
        self.image_processor = image_processor
        self.merge = image_processor.merge_size

    def __call__(self, images: list[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        out = self.image_processor([image.convert("RGB") for image in images], return_tensors="pt")
        grid = out["image_grid_thw"]
        return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}, (grid.prod(-1) // self.merge**2).tolist()

    def blank(self) -> tuple[dict[str, torch.Tensor], list[int]]:
        """The smallest image the processor makes (it resizes up to its min_pixels), mean colour."""
        side = self.image_processor.patch_size * self.merge
        colour = tuple(int(round(255 * mean)) for mean in self.image_processor.image_mean)
        return self([Image.new("RGB", (side, side), colour)])


class Qwen2VLBackbone(QwenSlots, Backbone):
    family = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    hf_classes = {"qwen2_vl": Qwen2VLForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}
    chat_formats = ("qwen2_vl", "qwen2_vl_plain")
    dynamic_resolution = True

    @classmethod
    def vision_width_of(cls, config) -> int:
        return qwen_vision_width(config)

    @classmethod
    def feature_layer(cls, config) -> int:
        return MERGER_INPUT

    @classmethod
    def check_profile(cls, config, profile: SinkProfile) -> None:
        if profile.vit_layer != MERGER_INPUT:
            raise SinkTrainError(
                f"sink profile {profile.name!r} reads V-sinks at vision layer {profile.vit_layer}, but the Qwen-VL merger "
                f"reads the last block's output (layer {MERGER_INPUT}); profile that layer (tools/find_sink_dims.py does)"
            )
        super().check_profile(config, profile)

    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.blocks

    @property
    def image_inputs(self) -> QwenImageInputs:
        return QwenImageInputs(self.processor.image_processor)

    @classmethod
    def limit_pixels(cls, processor, min_pixels: int | None, max_pixels: int | None) -> None:
        """--min_pixels / --max_pixels as Qwen's processor takes them: every image is resized (aspect
        kept, sides multiples of patch x merge) to a pixel count in that range."""
        cls.check_pixel_limits(min_pixels, max_pixels)
        size = dict(processor.image_processor.size)
        size.update({k: v for k, v in (("shortest_edge", min_pixels), ("longest_edge", max_pixels)) if v is not None})
        if size["shortest_edge"] > size["longest_edge"]:
            raise SinkTrainError(f"--min_pixels {size['shortest_edge']} exceeds --max_pixels {size['longest_edge']}; pass min <= max")
        processor.image_processor.size = size

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision: dict) -> dict:
        # transformers 5 computes M-RoPE positions only when told which tokens are image tokens
        types = (input_ids == self.image_token_id).int()
        return {**super().model_inputs(input_ids, attention_mask, vision), "mm_token_type_ids": types}

    def vision_states(self, hidden: torch.Tensor, vision: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The flat (patches, D) sequence of a batch -> (images, patches, D), padded; each image's
        patches are contiguous (in window order for Qwen2.5, which is what the merger reads)."""
        sizes = vision["image_grid_thw"].prod(-1).tolist()
        images = torch.nn.utils.rnn.pad_sequence(list(hidden.split(sizes)), batch_first=True)
        keep = torch.arange(images.shape[1], device=hidden.device) < torch.tensor(sizes, device=hidden.device)[:, None]
        return images, keep
