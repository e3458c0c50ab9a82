"""DeepSeek-VL and DeepSeek-VL-Hybrid on transformers' own classes (no vendored modeling code).

DeepSeek-VL: the ``aligner`` reads SigLIP's output *after* its final LayerNorm, and each image
fills a fixed number of slots (576 for the released models: the processor's ``num_image_tokens``),
one per patch, in patch order. V-sinks are read on exactly that post-norm tensor. ``vision_layers``
lists the encoder blocks followed by ``post_layernorm``, so hidden-state index -1 (the profile's
``vit_layer``) is the aligner's input and find_sink_dims measures the tensor the connector sees:
the norm rescales every token, so a tau_V measured before it would belong to another tensor.

Hybrid adds a SAM encoder at high resolution whose features are resampled onto the same grid
(``high_res_vision_neck`` / ``high_res_vision_proj``, the global path mixed in by
``high_res_vision_alpha``); its aligner takes both tensors per token (``vision_proj`` and
``high_res_vision_proj``, concatenated). Which branch defines V-sinks is the profile's
``sink_branch``: SigLIP alone (the default), SAM alone, or either. The DIYSink paper (Sec. 5) names
this blend as why its gains were small here and leaves the definition open, so both are offered.
Freezing the vision freezes both branches, the resampling convolutions and alpha.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from transformers import DeepseekVLForConditionalGeneration, DeepseekVLHybridForConditionalGeneration

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.profiles import SinkProfile
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.deepseek_slots import DeepseekVLHybridSlots, DeepseekVLSlots, deepseek_image_slots

POST_NORM_LAYER = -1  # the hidden-state index of post_layernorm's output in vision_layers()


class DeepseekImageInputs:
    """The processor's own resize-and-pad to a square (picklable, no model); ``keys`` are the
    forward's image tensors (Hybrid: both resolutions, always together)."""

    def __init__(self, image_processor, slots_per_image: int, keys: tuple[str, ...]):
        self.image_processor, self.slots_per_image, self.keys = image_processor, slots_per_image, keys

    def __call__(self, images: list[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        out = self.image_processor([image.convert("RGB") for image in images], return_tensors="pt")
        return {key: out[key] for key in self.keys}, [self.slots_per_image] * len(images)

    def blank(self) -> tuple[dict[str, torch.Tensor], list[int]]:
        size = self.image_processor.size
        return self([Image.new("RGB", (size["width"], size["height"]), tuple(self.image_processor.background_color))])


def image_slots(processor, config) -> int:
    """Slots per image: the processor's expansion of its image token, which must be the grid's size."""
    vision = config.vision_config
    grid = deepseek_image_slots(config)
    expands = getattr(processor, "num_image_tokens", grid)
    if expands != grid:
        raise SinkTrainError(
            f"the processor expands each image into {expands} tokens, but the model's SigLIP ({vision.image_size} px, patch "
            f"{vision.patch_size}) gives {grid} features per image; load the processor saved with this model"
        )
    size = processor.image_processor.size
    if (size["height"], size["width"]) != (vision.image_size, vision.image_size):
        raise SinkTrainError(
            f"the image processor resizes to {size['height']}x{size['width']}, but the model's SigLIP takes "
            f"{vision.image_size}x{vision.image_size}; load the processor saved with this model (preprocessor_config.json)"
        )
    return grid


class DeepseekVLBackbone(DeepseekVLSlots, Backbone):
    family = "deepseek_vl"
    model_types = ("deepseek_vl",)
    hf_classes = {"deepseek_vl": DeepseekVLForConditionalGeneration}
    chat_formats = ("deepseek", "deepseek_plain")
    image_keys: tuple[str, ...] = ("pixel_values",)
    vision_read_after_norm = True

    def __init__(self, model, processor, sink_profile):
        self._image_slots = image_slots(processor, model.config)
        super().__init__(model, processor, sink_profile)

    @classmethod
    def feature_layer(cls, config) -> int:
        return POST_NORM_LAYER

    @classmethod
    def vision_width_of(cls, config) -> int:
        return config.vision_config.hidden_size

    @classmethod
    def check_profile(cls, config, profile: SinkProfile) -> None:
        if profile.vit_layer != POST_NORM_LAYER:
            raise SinkTrainError(
                f"sink profile {profile.name!r} reads V-sinks at vision layer {profile.vit_layer}, but {config.model_type} feeds "
                f"its aligner SigLIP's output after post_layernorm, hidden-state index {POST_NORM_LAYER} here; profile that "
                "tensor (tools/find_sink_dims.py does) or set vit_layer to -1"
            )
        super().check_profile(config, profile)

    def vision_layers(self) -> nn.ModuleList:
        """SigLIP's blocks, then post_layernorm: its output (index -1) is what the aligner reads."""
        tower = self.vision_tower
        return nn.ModuleList([*tower.encoder.layers, tower.post_layernorm])

    @property
    def image_inputs(self) -> DeepseekImageInputs:
        return DeepseekImageInputs(self.processor.image_processor, self._image_slots, self.image_keys)

    def vision_states(self, hidden: torch.Tensor, vision: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)


class DeepseekVLHybridBackbone(DeepseekVLHybridSlots, DeepseekVLBackbone):
    family = "deepseek_vl_hybrid"
    model_types = ("deepseek_vl_hybrid",)
    hf_classes = {"deepseek_vl_hybrid": DeepseekVLHybridForConditionalGeneration}
    extra_vision_paths = ("model.high_res_vision_model", "model.high_res_vision_neck", "model.high_res_vision_proj", "model.high_res_vision_alpha")
    image_keys = ("pixel_values", "high_res_pixel_values")

    @classmethod
    def high_res_width_of(cls, config) -> int:
        """Channels of the SAM tensor the aligner receives (after the resampling convolutions)."""
        return config.high_res_vision_config.output_channels * 4
