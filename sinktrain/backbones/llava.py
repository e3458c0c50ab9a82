"""LLaVA-1.5 on transformers' own LlavaForConditionalGeneration (no vendored modeling code).

Vision features are the CLIP hidden state at ``vision_feature_layer`` (-2) with CLS dropped, the
exact tensor LLaVA feeds its projector; the connector is ``model.model.multi_modal_projector``.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from sinktrain.backbones.base import Backbone
from sinktrain.errors import SinkTrainError
from sinktrain.train.zero import init_context


def vision_tower_id(vision_config) -> str:
    """A stable identity for a vision tower, used to find its built-in sink profile."""
    size, patch = vision_config.image_size, vision_config.patch_size
    if vision_config.model_type == "clip_vision_model" and vision_config.hidden_size == 1024 and patch == 14:
        return f"clip-vit-l-14-{size}"
    if vision_config.model_type == "siglip_vision_model" and vision_config.hidden_size == 1152 and patch == 14:
        return f"siglip-so400m-14-{size}"
    return f"{vision_config.model_type}-h{vision_config.hidden_size}-p{patch}-{size}"


def llm_id(text_config) -> str:
    shape = (text_config.model_type, text_config.hidden_size, text_config.num_hidden_layers)
    known = {("llama", 4096, 32): "llama-2-7b", ("llama", 5120, 40): "llama-2-13b", ("qwen2", 3584, 28): "qwen2-7b"}
    return known.get(shape, f"{shape[0]}-h{shape[1]}-l{shape[2]}")


def expand_to_square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Pad to a square, image centred, like LLaVA-1.5's ``expand2square`` (stage-2 'pad' aspect)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class SquareImagePreprocessor:
    """LLaVA-1.5 stage-2 image preprocessing: pad to square with the mean colour, then the processor.

    Small and picklable, so data workers carry it without the model.
    """

    def __init__(self, image_processor):
        self.image_processor = image_processor
        self.background = tuple(int(round(255 * mean)) for mean in image_processor.image_mean)
        self.size = (image_processor.crop_size["width"], image_processor.crop_size["height"])

    def __call__(self, images: list) -> torch.Tensor:
        # A text-only sample gets a mean-colour image: it still runs the vision path (ZeRO-3).
        squared = [
            expand_to_square(image.convert("RGB"), self.background) if image is not None
            else Image.new("RGB", self.size, self.background)
            for image in images
        ]
        return self.image_processor(squared, return_tensors="pt")["pixel_values"]


class LlavaBackbone(Backbone):
    family = "llava"
    default_template = "v1"
    model_types = ("llava",)
    class_name = "LlavaForConditionalGeneration"

    def __init__(self, model, processor, sink_profile):
        super().__init__(model, processor, sink_profile)
        if sink_profile.vit_layer != model.config.vision_feature_layer:
            raise SinkTrainError(
                f"sink profile {sink_profile.name!r} reads V-sinks at vision layer {sink_profile.vit_layer}, but this "
                f"LLaVA feeds its projector from layer {model.config.vision_feature_layer}; profile the layer the "
                "projector reads (tools/find_sink_dims.py does) or fix vit_layer"
            )
        self._num_image_tokens = self._count_processor_image_tokens()

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.model.vision_tower

    @property
    def connector(self) -> nn.Module:
        return self.model.model.multi_modal_projector

    @connector.setter
    def connector(self, module: nn.Module) -> None:
        self.model.model.multi_modal_projector = module

    def new_connector(self) -> nn.Module:
        with init_context():
            return LlavaMultiModalProjector(self.model.config)

    def decoder_layers(self) -> nn.ModuleList:
        return self.model.model.language_model.layers

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def num_image_tokens(self) -> int:
        return self._num_image_tokens

    def _count_processor_image_tokens(self) -> int:
        """How many tokens the processor expands one <image> into (576 for LLaVA-1.5-7B)."""
        size = self.processor.image_processor.crop_size
        blank = Image.new("RGB", (size["width"], size["height"]))
        encoded = self.processor(text=self.processor.image_token, images=blank, return_tensors="pt")
        return int((encoded["input_ids"] == self.image_token_id).sum())

    @property
    def preprocess_images(self) -> "SquareImagePreprocessor":
        return SquareImagePreprocessor(self.processor.image_processor)

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        dtype = next(self.vision_tower.parameters()).dtype
        outputs = self.vision_tower(pixel_values.to(dtype), output_hidden_states=True, return_dict=True)
        features = outputs.hidden_states[config.vision_feature_layer]
        if config.vision_feature_select_strategy == "default":
            features = features[:, 1:]  # drop CLS, as LLaVA does
        return features
