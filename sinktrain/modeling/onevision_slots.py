"""LLaVA-OneVision's slots. AnyRes: an image becomes a base crop plus grid tiles; SigLIP and the
projector run on every crop token; then the model's ``pack_image_features`` lays the tiles out as
one grid, cuts the letterbox padding away (unpadding), shrinks a grid larger than
``vision_aspect_ratio`` allows (bilinear) and appends ``image_newline`` after every grid row; the
base crop's tokens go first, without newlines. An image of a multi-image sample gets one crop and
one trailing newline. So connector rows are crop tokens, not slots: V-sink flags are mapped onto
slots by pushing a flag mask through the model's own packing (a slot blended from several tokens
is a V-sink when any of them is), which also says which slots are newlines (layout, not patches)
and how many slots each image fills.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llava_onevision.modeling_llava_onevision import (
    LlavaOnevisionModel,
    LlavaOnevisionMultiModalProjector,
    image_size_to_num_patches,
)

from .method_hook import MethodHook
from .slotted import SlottedModel

VISION_KEYS = ("pixel_values", "image_sizes", "batch_num_images")  # the forward's image kwargs
NEWLINE_FLAG = torch.tensor([0.0, 1.0])  # packed in place of image_newline: column 1 marks newlines


def tokens_per_crop(config) -> int:
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def crops_per_image(config, image_sizes: torch.Tensor, batch_num_images: torch.Tensor | None) -> list[int]:
    """As the model's ``get_image_features`` counts them: the image of a single-image sample gets
    AnyRes crops (tiles + base), each image of a multi-image sample one crop."""
    if batch_num_images is None:
        patched = [True] * len(image_sizes)
    else:
        patched = [count == 1 for count in batch_num_images.tolist() for _ in range(count)]
    side = config.vision_config.image_size
    return [
        image_size_to_num_patches(size, config.image_grid_pinpoints, side) if anyres else 1
        for size, anyres in zip(image_sizes, patched)
    ]


class _ConfigHolder:
    """What ``pack_image_features`` reads of its model: the config (so data workers need no model)."""

    def __init__(self, config):
        self.config = config


def packed_flags(config, vision: dict, row_flags: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per image, (slots, 2) from the model's own packing of a flag mask: column 0 > 0 where a slot
    blends a flagged crop token, column 1 == 1 at newline slots."""
    sizes = vision["image_sizes"]
    crops = crops_per_image(config, sizes, vision.get("batch_num_images"))
    shape = (sum(crops), tokens_per_crop(config))
    flags = torch.zeros(shape) if row_flags is None else row_flags.float().reshape(shape).cpu()
    mask = torch.stack([flags, torch.zeros_like(flags)], dim=-1)
    packed, _ = LlavaOnevisionModel.pack_image_features(
        _ConfigHolder(config), list(mask.split(crops)), sizes.cpu(), image_newline=NEWLINE_FLAG,
        vision_aspect_ratio=config.vision_aspect_ratio,
    )
    return packed


class OneVisionSlots(SlottedModel):
    connector_path = "model.multi_modal_projector"
    vision_tower_path = "model.vision_tower"

    def connector_module(self) -> nn.Module:
        return LlavaOnevisionMultiModalProjector(self.model.config)

    def watch_vision(self, note) -> list:
        # generate() encodes images through get_image_features and pops image_sizes before the
        # prefill; the vision tower itself only sees crops
        return [MethodHook(self.model.model, "get_image_features", lambda arguments, _: note({k: arguments.get(k) for k in VISION_KEYS}))]

    def slots_per_image(self, vision: dict, visual_slots: int) -> list[int]:
        return [len(image) for image in packed_flags(self.model.config, vision)]

    def to_slot_order(self, per_token: torch.Tensor, vision: dict) -> torch.Tensor:
        return torch.cat(packed_flags(self.model.config, vision, per_token))[:, 0] > 0

    def patch_slots(self, vision: dict, visual_slots: int) -> torch.Tensor:
        return torch.cat(packed_flags(self.model.config, vision))[:, 1] == 0
