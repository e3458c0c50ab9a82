"""LLaVA-1.5 on transformers' own LlavaForConditionalGeneration (no vendored modeling code).

The connector ``model.multi_modal_projector`` reads the CLIP hidden state at
``vision_feature_layer`` (-2) with CLS dropped, so that is where V-sinks are read; each image
fills a fixed number of slots (576 for LLaVA-1.5-7B, one per patch, in patch order). Images are
padded to a square with the processor's mean colour first, as LLaVA-1.5's stage 2 does.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from transformers import LlavaForConditionalGeneration

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.profiles import SinkProfile
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.llava_slots import LlavaSlots, llava_image_slots


def expand_to_square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Pad to a square, image centred, like LLaVA-1.5's ``expand2square`` (stage-2 'pad' aspect)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def check_feature_layer(config, profile: SinkProfile) -> None:
    """V-sinks are read where the projector reads: the profile must name that vision layer."""
    if profile.vit_layer != config.vision_feature_layer:
        raise SinkTrainError(
            f"sink profile {profile.name!r} reads V-sinks at vision layer {profile.vit_layer}, but this "
            f"{config.model_type} model feeds its projector from layer {config.vision_feature_layer}; profile the layer "
            "the projector reads (tools/find_sink_dims.py does) or fix vit_layer"
        )


class SquareImageInputs:
    """LLaVA-1.5 stage-2 image inputs: pad to square with the mean colour, then the processor.

    Small and picklable, so data workers carry it without the model."""

    def __init__(self, image_processor, slots_per_image: int):
        self.image_processor, self.slots_per_image = image_processor, slots_per_image
        self.background = tuple(int(round(255 * mean)) for mean in image_processor.image_mean)
        self.size = (image_processor.crop_size["width"], image_processor.crop_size["height"])

    def __call__(self, images: list[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        squared = [expand_to_square(image.convert("RGB"), self.background) for image in images]
        pixels = self.image_processor(squared, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels}, [self.slots_per_image] * len(images)

    def blank(self) -> tuple[dict[str, torch.Tensor], list[int]]:
        return self([Image.new("RGB", self.size, self.background)])


class LlavaBackbone(LlavaSlots, Backbone):
    family = "llava"
    model_types = ("llava",)
    hf_classes = {"llava": LlavaForConditionalGeneration}
    chat_formats = ("v1", "plain")

    def __init__(self, model, processor, sink_profile):
        self._image_slots = llava_image_slots(model.config)
        expands = self._count_processor_image_tokens(processor, model.config.image_token_id)
        if expands != self._image_slots:
            raise SinkTrainError(
                f"the processor expands each image into {expands} tokens, but this model's projector gives "
                f"{self._image_slots} per image; load the processor saved with this model"
            )
        super().__init__(model, processor, sink_profile)

    @classmethod
    def feature_layer(cls, config) -> int:
        return config.vision_feature_layer

    @classmethod
    def check_profile(cls, config, profile: SinkProfile) -> None:
        check_feature_layer(config, profile)
        super().check_profile(config, profile)

    @classmethod
    def vision_width_of(cls, config) -> int:
        return config.vision_config.hidden_size

    def vision_layers(self) -> nn.ModuleList:
        return self.vision_tower.encoder.layers

    @staticmethod
    def _count_processor_image_tokens(processor, image_token_id: int) -> int:
        """How many tokens the processor expands one <image> into (576 for LLaVA-1.5-7B)."""
        size = processor.image_processor.crop_size
        blank = Image.new("RGB", (size["width"], size["height"]))
        encoded = processor(text=processor.image_token, images=blank, return_tensors="pt")
        return int((encoded["input_ids"] == image_token_id).sum())

    @property
    def image_inputs(self) -> SquareImageInputs:
        return SquareImageInputs(self.processor.image_processor, self._image_slots)

    def vision_states(self, hidden: torch.Tensor, vision: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model.config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]  # CLS dropped, as LLaVA does
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
