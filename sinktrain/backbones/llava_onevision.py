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
data workers as in the model, so both agree by construction (the model side:
sinktrain.modeling.onevision_slots).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from transformers import LlavaOnevisionForConditionalGeneration

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.llava import check_feature_layer
from sinktrain.backbones.profiles import SinkProfile
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.onevision_slots import OneVisionSlots, crops_per_image, packed_flags


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


class LlavaOnevisionBackbone(OneVisionSlots, Backbone):
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    hf_classes = {"llava_onevision": LlavaOnevisionForConditionalGeneration}
    chat_formats = ("onevision", "onevision_plain")
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

    @property
    def image_inputs(self) -> OneVisionImageInputs:
        return OneVisionImageInputs(self.processor.image_processor, self.model.config)

    def vision_states(self, hidden: torch.Tensor, vision: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(crops, tokens, D) of a batch -> (images, crop tokens, D), padded: each image's crops in a row."""
        crops = crops_per_image(self.model.config, vision["image_sizes"], vision.get("batch_num_images"))
        per_image = [image.flatten(0, 1) for image in hidden.split(crops)]
        sizes = torch.tensor([len(image) for image in per_image], device=hidden.device)
        images = torch.nn.utils.rnn.pad_sequence(per_image, batch_first=True)
        return images, torch.arange(images.shape[1], device=hidden.device) < sizes[:, None]
