"""The backbone interface every method (DIYSink, LSG) is written against.

A backbone wraps one Hugging Face model class without copying its modeling code. It exposes the
few places sink methods touch: the vision features that feed the connector (where V-sinks are
read), the connector itself (DIYSink replaces it), the LLM decoder layers (LSG hooks them), where
image tokens sit in the sequence, and the sink profile.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from sinktrain.backbones.profiles import SinkProfile
from sinktrain.errors import SinkTrainError


@dataclass
class Batch:
    """What the collator hands a backbone: padded token ids plus one image slot per sample."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, -100 where no loss
    pixel_values: torch.Tensor  # (B, 3, H, W): text-only samples carry a blank image
    has_image: torch.Tensor  # (B,) bool
    last_prompt_index: torch.Tensor  # (B,) long: last token before the first answer

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        moved = {name: value.to(device) for name, value in vars(self).items()}
        if dtype is not None:
            moved["pixel_values"] = moved["pixel_values"].to(dtype)
        return Batch(**moved)


class Backbone(ABC):
    """One LVLM family behind the interface sink methods need."""

    family: str  # registry name, e.g. "llava"
    default_template: str  # conversation template of its instruction tuning, e.g. "v1"

    def __init__(self, model: nn.Module, processor, sink_profile: SinkProfile):
        self.model = model
        self.processor = processor
        self.sink_profile = sink_profile
        self.batch_hooks: list = []  # methods that need the batch before a forward (LSG positions)

    # -- structure -------------------------------------------------------------------------
    @property
    @abstractmethod
    def vision_tower(self) -> nn.Module: ...

    @property
    @abstractmethod
    def connector(self) -> nn.Module: ...

    @connector.setter
    @abstractmethod
    def connector(self, module: nn.Module) -> None: ...

    @abstractmethod
    def new_connector(self) -> nn.Module:
        """A fresh projector of this backbone's connector shape (partitioned under ZeRO-3)."""

    @abstractmethod
    def decoder_layers(self) -> nn.ModuleList: ...

    @property
    @abstractmethod
    def image_token_id(self) -> int: ...

    @property
    @abstractmethod
    def num_image_tokens(self) -> int: ...

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # -- data ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def preprocess_images(self):
        """A picklable callable: list of PIL images (None = text-only) -> (B, 3, H, W) tensor."""

    # -- forward ---------------------------------------------------------------------------
    @abstractmethod
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision features that feed the connector: (B, N, D_vit), where V-sinks are read."""

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Connector output for every image: (B, N, D_llm)."""
        return self.connector(self.vision_features(pixel_values))

    def embed_inputs(self, batch: Batch) -> torch.Tensor:
        """Token embeddings with image-token slots replaced by connector outputs.

        Every sample's image goes through the vision path, text-only ones too (with a blank image
        whose embeddings are not used, so their gradient is zero but present): under ZeRO-3 every
        rank must run the same modules and produce gradients for the same parameters, or the
        collectives hang.
        """
        embeds = self.model.get_input_embeddings()(batch.input_ids)
        images = self.image_embeddings(batch.pixel_values).to(embeds.dtype)
        slots = batch.input_ids == self.image_token_id
        used = images[batch.has_image]
        if slots.sum().item() != used.shape[0] * used.shape[1]:
            raise SinkTrainError(
                f"batch has {slots.sum().item()} image-token slots but {used.shape[0]} images of "
                f"{used.shape[1]} tokens; build samples with sinktrain.data so each <image> expands "
                f"to {self.num_image_tokens} tokens"
            )
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), used.reshape(-1, used.shape[-1]))
        return embeds

    def forward(self, batch: Batch):
        """Language-model forward on a collated batch; returns the HF output (loss, logits)."""
        for hook in self.batch_hooks:
            hook(batch)
        return self.model(
            inputs_embeds=self.embed_inputs(batch),
            attention_mask=batch.attention_mask,
            labels=batch.labels,
        )

    def freeze_vision(self) -> None:
        for parameter in self.vision_tower.parameters():
            parameter.requires_grad_(False)
