"""LLaVA-OneVision on transformers' own LlavaOnevisionForConditionalGeneration (no vendored modeling code).

AnyRes: an image becomes a base crop (the whole image, resized) plus grid tiles picked from
``image_grid_pinpoints``; SigLIP runs on every crop and the projector on every crop token. Then
the model's ``pack_image_features`` lays the tiles out as one grid, cuts the letterbox padding
away (unpadding), shrinks a grid larger than ``vision_aspect_ratio`` allows (bilinear) and appends
``image_newline`` after every grid row; the base crop's tokens go first, without newlines. An image
of a multi-image sample gets one crop and one trailing newline. So connector rows are crop tokens,
not slots: V-sinks are read per crop token on the projector's input (the SigLIP layer
``vision_feature_layer``) and mapped onto slots by pushing a flag mask through the model's own
packing (a slot blended from several tokens is a V-sink when any of them is). The same packing
says which slots are newlines (layout, not patches) and how many slots each image fills, in the
data workers as in the model, so both agree by construction.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from transformers import LlavaOnevisionForConditionalGeneration
from transformers.models.llava_onevision.modeling_llava_onevision import (
    LlavaOnevisionModel,
    LlavaOnevisionMultiModalProjector,
    image_size_to_num_patches,
)

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.llava import check_feature_layer
from sinktrain.backbones.method_hook import MethodHook
from sinktrain.backbones.profiles import SinkProfile
from sinktrain.errors import SinkTrainError
from sinktrain.train.zero import init_context

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


class OneVisionImageInputs:
    """AnyRes image inputs of one sample (picklable, no model): flat crops, sizes, slots per image."""

    def __init__(self, image_processor, config):
        self.image_processor, self.config = image_processor, config

    def __call__(self, images: list[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        images = [image.convert("RGB") for image in images]
        # one nested list = one sample with several images (batch_num_images = [n]: one crop each)
        out = self.image_processor([images] if len(images) > 1 else images, return_tensors="pt")
        vision = {"image_sizes": out["image_sizes"], "batch_num_images": out["batch_num_images"]}
        crops = crops_per_image(self.config, vision["image_sizes"], vision["batch_num_images"])
        # the processor pads every image to the most crops; the forward takes them flat, unpadded
        pixels = torch.cat([padded[:count] for padded, count in zip(out["pixel_values"], crops)])
        return {"pixel_values": pixels, **vision}, [len(image) for image in packed_flags(self.config, vision)]

    def blank(self) -> tuple[dict[str, torch.Tensor], list[int]]:
        """One crop-sized image of the mean colour (a base crop and one tile: the fewest slots)."""
        side = self.config.vision_config.image_size
        colour = tuple(int(round(255 * mean)) for mean in self.image_processor.image_mean)
        return self([Image.new("RGB", (side, side), colour)])


def check_image_processor(image_processor, config) -> None:
    """The processor's crop size and grid must be the model's, or slots and crops silently disagree."""
    size = image_processor.size
    side = config.vision_config.image_size
    pinpoints = [list(point) for point in getattr(image_processor, "image_grid_pinpoints", None) or []]
    if (size.get("height"), size.get("width")) != (side, side) or pinpoints != [list(p) for p in config.image_grid_pinpoints]:
        raise SinkTrainError(
            f"the image processor crops {size} on grid {pinpoints}, but the model was built for {side}x{side} crops on "
            f"{config.image_grid_pinpoints}; load the processor saved with this model (preprocessor_config.json)"
        )


class LlavaOnevisionBackbone(Backbone):
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    hf_classes = {"llava_onevision": LlavaOnevisionForConditionalGeneration}
    chat_formats = ("onevision", "onevision_plain")
    connector_path = "model.multi_modal_projector"
    vision_tower_path = "model.vision_tower"
    l_sink_values = "raw"  # the LSG paper reads this model's L-sinks on raw magnitudes (Appendix, Table S7)

    def __init__(self, model, processor, sink_profile):
        check_image_processor(processor.image_processor, model.config)
        super().__init__(model, processor, sink_profile)

    @classmethod
    def feature_layer(cls, config) -> int:
        return config.vision_feature_layer

    @classmethod
    def check_profile(cls, config, profile: SinkProfile) -> None:
        if not isinstance(config.vision_feature_layer, int) or config.vision_feature_select_strategy != "full":
            raise SinkTrainError(
                f"this LLaVA-OneVision reads vision layer(s) {config.vision_feature_layer} with strategy "
                f"{config.vision_feature_select_strategy!r}; sinktrain supports one layer with 'full' (as every released "
                "OneVision model), since V-sinks are read on the one tensor the projector receives"
            )
        check_feature_layer(config, profile)
        super().check_profile(config, profile)

    @classmethod
    def vision_width_of(cls, config) -> int:
        return config.vision_config.hidden_size

    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.encoder.layers

    def new_connector(self) -> nn.Module:
        with init_context():
            return LlavaOnevisionMultiModalProjector(self.model.config)

    @property
    def image_inputs(self) -> OneVisionImageInputs:
        return OneVisionImageInputs(self.processor.image_processor, self.model.config)

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

    def vision_states(self, hidden: torch.Tensor, vision: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(crops, tokens, D) of a batch -> (images, crop tokens, D), padded: each image's crops in a row."""
        crops = crops_per_image(self.model.config, vision["image_sizes"], vision.get("batch_num_images"))
        per_image = [image.flatten(0, 1) for image in hidden.split(crops)]
        sizes = torch.tensor([len(image) for image in per_image], device=hidden.device)
        images = torch.nn.utils.rnn.pad_sequence(per_image, batch_first=True)
        return images, torch.arange(images.shape[1], device=hidden.device) < sizes[:, None]
