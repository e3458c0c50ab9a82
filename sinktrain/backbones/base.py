"""The contract every model family fulfils, and every method (DIYSink, LSG) is written against.

Families differ in how an image becomes LLM tokens (LLaVA-1.5: a fixed 576 slots; Qwen-VL:
dynamic resolution, a 2x2 patch merger, 3-D M-RoPE positions). Methods must not see that, so a
backbone speaks in LLM *slots*: the positions of image tokens in the sequence, in the order the
model fills them. The model side of that contract is sinktrain.modeling.slotted.SlottedModel
(where the parts are, how connector rows map to slots, ``self.slots`` recording each forward),
kept free of sinktrain imports so Hugging Face exports run the same forward as remote code; a
Backbone adds what training needs: the processor and image inputs, chat formats, the sink profile
and its checks, vision layers for find_sink_dims, freezing. Each forward runs the stock Hugging
Face model (training, evaluation, generation and find_sink_dims alike: one forward path). A
family is one file here plus its slot map in sinktrain/modeling and a tiny-config fixture
(sinktrain.demo).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Iterator

import torch
from torch import nn

from sinktrain.backbones.identity import vision_tower_id
from sinktrain.backbones.profiles import SinkProfile
from sinktrain.data.batch import Batch
from sinktrain.data.chat import FORMATS
from sinktrain.data.collate import Collator
from sinktrain.data.encode import SampleEncoder
from sinktrain.data.images import ImageInputs
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.slotted import SlottedModel
from sinktrain.train.zero import init_context


class Backbone(SlottedModel):
    family: ClassVar[str]  # registry name, e.g. "llava"
    model_types: ClassVar[tuple[str, ...]]  # the config.model_type values this family loads
    # templates it speaks; the first is its instruction-tuning one, one is its projector-pretraining one
    chat_formats: ClassVar[tuple[str, ...]]
    dynamic_resolution: ClassVar[bool] = False  # slots per image depend on its size (--min/max_pixels)
    # how find_sink_dims reads L-sink magnitudes by default: "rms" (VAR's weightless RMSNorm first) or "raw"
    l_sink_values: ClassVar[str] = "rms"
    # the last of vision_layers() is a LayerNorm between the residual stream and the connector
    # (DeepSeek-VL's post_layernorm): find_sink_dims judges massiveness on its input
    vision_read_after_norm: ClassVar[bool] = False
    # further visual parts outside the tower, modules or bare parameters (DeepSeek-VL-Hybrid's SAM
    # branch, its resampling convolutions and mixing weight): freezing the vision freezes them too
    extra_vision_paths: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, processor, sink_profile: SinkProfile):
        self.processor = processor
        self.check_profile(model.config, sink_profile)
        super().__init__(model, sink_profile)

    def vision_parameters(self) -> Iterator[nn.Parameter]:
        """Everything visual except the connector: what freezing 'the vision tower' freezes."""
        connector = {id(p) for p in self.connector.parameters()}
        for path in (self.vision_tower_path, *self.extra_vision_paths):
            part = self._module(path)
            for parameter in [part] if isinstance(part, nn.Parameter) else part.parameters():
                if id(parameter) not in connector:
                    yield parameter

    @abstractmethod
    def vision_layers(self) -> nn.ModuleList:
        """The vision encoder's blocks; find_sink_dims hooks them."""

    def new_connector(self) -> nn.Module:
        """A fresh connector of this family's shape, born partitioned under ZeRO-3."""
        with init_context():
            return self.connector_module()

    @classmethod
    @abstractmethod
    def vision_width_of(cls, config) -> int:
        """Channels of the tensor V-sinks are read on (the connector's input), from the config."""

    @classmethod
    @abstractmethod
    def feature_layer(cls, config) -> int:
        """The vision hidden-state index the connector reads (where V-sinks are read)."""

    @classmethod
    def high_res_width_of(cls, config) -> int | None:
        """Channels of a second vision branch's tensor at the connector (DeepSeek-VL-Hybrid's SAM), else None."""
        return None

    @property
    def vision_width(self) -> int:
        return self.vision_width_of(self.model.config)

    @property
    def high_res_width(self) -> int | None:
        return self.high_res_width_of(self.model.config)

    @classmethod
    def vision_tower_id(cls, config) -> str:
        return vision_tower_id(config.vision_config, cls.vision_width_of(config))

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # -- data --------------------------------------------------------------------------------
    @property
    @abstractmethod
    def image_inputs(self) -> ImageInputs:
        """Picklable: PIL images -> this model's image tensors and slots per image."""

    @property
    def default_template(self) -> str:
        return self.chat_formats[0]

    @classmethod
    def pretraining_template(cls) -> str:
        """The family's connector-pretraining format (LLaVA's ``plain`` or its equivalent)."""
        return next(name for name in cls.chat_formats if FORMATS[name].single_turn)

    @classmethod
    def check_template(cls, template: str | None) -> str:
        """The template to use (None: the family's own); refuses another family's format."""
        template = template or cls.chat_formats[0]
        if template not in cls.chat_formats:
            speaker = FORMATS[template].family if template in FORMATS else "no supported family"
            raise SinkTrainError(
                f"--template {template} is the chat format of {speaker}, but this is a {cls.family} model, which speaks "
                f"{', '.join(cls.chat_formats)}; pass one of those or leave --template unset (default {cls.chat_formats[0]})"
            )
        return template

    @classmethod
    def check_pixel_limits(cls, min_pixels: int | None, max_pixels: int | None) -> None:
        """--min_pixels / --max_pixels: only dynamic-resolution families take them."""
        if (min_pixels is not None or max_pixels is not None) and not cls.dynamic_resolution:
            raise SinkTrainError(
                f"--min_pixels / --max_pixels apply to dynamic-resolution families (qwen2_vl); a {cls.family} model "
                "resizes every image to its processor's fixed size, so leave them out"
            )
        for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if value is not None and value < 1:
                raise SinkTrainError(f"--{name} {value}: pass a positive number of pixels, e.g. --{name} {256 * 28 * 28}")
        if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
            raise SinkTrainError(f"--min_pixels {min_pixels} exceeds --max_pixels {max_pixels}; pass min <= max")

    def encoder(self, template: str | None = None, max_length: int | None = None, on_overflow: str = "truncate") -> SampleEncoder:
        """Shard samples -> training examples in this model's chat format and image inputs."""
        return SampleEncoder(self.tokenizer, self.image_inputs, self.check_template(template), self.image_token_id, max_length, on_overflow)

    def collator(self) -> Collator:
        return Collator(self.tokenizer.pad_token_id, self.image_token_id, self.image_inputs.blank())

    def set_pixel_limits(self, min_pixels: int | None, max_pixels: int | None) -> None:
        """Apply --min_pixels / --max_pixels to this backbone's processor."""
        self.limit_pixels(self.processor, min_pixels, max_pixels)

    @classmethod
    def limit_pixels(cls, processor, min_pixels: int | None, max_pixels: int | None) -> None:
        """--min_pixels / --max_pixels on a processor of this family (dynamic-resolution families override this)."""
        cls.check_pixel_limits(min_pixels, max_pixels)

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision: dict) -> dict:
        """Keyword arguments of the model's own forward (and generate) for these ids and images."""
        return {"input_ids": input_ids, "attention_mask": attention_mask, **vision}

    # -- slots -------------------------------------------------------------------------------
    @classmethod
    def check_profile(cls, config, profile: SinkProfile) -> None:
        """Refuse a profile that cannot belong to this model (before any weight is loaded)."""
        profile.check_fits(cls.vision_width_of(config), config.text_config.hidden_size, cls.high_res_width_of(config))

    @abstractmethod
    def vision_states(self, hidden: torch.Tensor, vision: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One vision layer's hidden state -> (images, tokens, D) of the positions that reach the
        connector, plus a (images, tokens) mask of the real ones (images of unequal size are padded)."""

    # -- forward -----------------------------------------------------------------------------
    def forward(self, batch: Batch):
        """Language-model forward on a collated batch; returns the HF output (loss, logits)."""
        return self.model(**self.model_inputs(batch.input_ids, batch.attention_mask, batch.vision), labels=batch.labels)

    def freeze_vision(self) -> None:
        for parameter in self.vision_parameters():
            parameter.requires_grad_(False)
