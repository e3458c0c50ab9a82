"""A stock Hugging Face model whose every forward reports its visual *slots*: the model-side half
of sinktrain's backbone contract, which methods (DIYSink, LSG) are written against.

Families differ in how an image becomes LLM tokens (LLaVA-1.5: a fixed 576 slots; Qwen-VL:
dynamic resolution, a 2x2 patch merger, 3-D M-RoPE positions). Methods must not see that, so a
family says where its parts are (attribute paths) and how its connector's output tokens map to
slots; ``self.slots`` (slots.py) records per forward which slots are visual, which are image
patches, which image each belongs to, which are V-sinks (read on the connector's input with the
sink rule) and where the last prompt token is. One subclass per family (llava_slots.py,
onevision_slots.py, qwen_slots.py, deepseek_slots.py); sinktrain's Backbone adds the data side.

This file and its neighbours import only torch and transformers, so a Hugging Face export carries
them as remote code and runs the forward it was trained with. ``sink_rule`` is any object with the
fields of ``SinkRule`` (sinks.py): sinktrain passes its SinkProfile, an export its config's copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch
from torch import nn

from .sinks import v_sink_mask
from .slots import SlotTracker


class SlottedModel(ABC):
    # where the parts are, as attribute paths from the model (e.g. "model.visual.merger")
    connector_path: ClassVar[str]  # the module that maps vision features to LLM embeddings
    vision_tower_path: ClassVar[str]  # the vision encoder (may contain the connector, as Qwen's does)
    language_model_path: ClassVar[str] = "model.language_model"  # receives inputs_embeds, position_ids
    connector_group: ClassVar[int] = 1  # connector input rows per output token (Qwen's merger: 4)

    def __init__(self, model: nn.Module, sink_rule):
        self.model, self.sink_profile = model, sink_rule
        self.slots = SlotTracker(self)

    def _module(self, path: str) -> nn.Module | nn.Parameter:
        module = self.model
        for name in path.split("."):
            module = getattr(module, name)
        return module

    @property
    def connector(self) -> nn.Module:
        return self._module(self.connector_path)

    @connector.setter
    def connector(self, module: nn.Module) -> None:
        parent, _, name = self.connector_path.rpartition(".")
        setattr(self._module(parent), name, module)
        self.slots.watch_connector()

    @property
    def vision_tower(self) -> nn.Module:
        return self._module(self.vision_tower_path)

    @property
    def language_model(self) -> nn.Module:
        return self._module(self.language_model_path)

    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def llm_width(self) -> int:
        return self.model.config.text_config.hidden_size

    @abstractmethod
    def connector_module(self) -> nn.Module:
        """A fresh connector of this family's shape (random weights; sinktrain's Backbone builds it partitioned)."""

    # -- how connector tokens become slots ---------------------------------------------------
    def token_sink_mask(self, features: torch.Tensor, *more_inputs: torch.Tensor) -> torch.Tensor:
        """V-sink flag of every connector output token, from the connector's input(s) (flat, in its order).

        A token made of several input rows (Qwen's 2x2 merge) is a V-sink when any of them is. A
        connector with several inputs per token (DeepSeek-VL-Hybrid's) gets them all; by default
        V-sinks are read on the first."""
        rule = self.sink_profile
        rows = v_sink_mask(features, rule.criterion, rule.tau_v, rule.vit_dims).reshape(-1)
        return rows.view(-1, self.connector_group).any(dim=-1)

    def to_slot_order(self, per_token: torch.Tensor, vision: dict) -> torch.Tensor:
        """Per-token V-sink flags in connector-output order -> one per visual slot, in slot order.

        A family may drop tokens (unpadding), blend them (a downscaled grid: a slot is a V-sink when
        any token it blends is) and insert slots of its own (newlines: False)."""
        return per_token

    def watch_vision(self, note: Callable[[dict], None]) -> list:
        """Hooks that report a forward's whole image inputs when the vision tower's own call does not
        carry them (LLaVA-OneVision's image sizes): each calls ``note(vision)`` once the images are
        encoded, with the forward's keyword names. Returns handles with ``remove()``."""
        return []

    def patch_slots(self, vision: dict, visual_slots: int) -> torch.Tensor:
        """(visual_slots,) bool: which visual slots hold image content, as opposed to layout tokens
        such as LLaVA-OneVision's row newlines (never V-sinks, never reordered, gated only on request)."""
        return torch.ones(visual_slots, dtype=torch.bool)

    def vision_call_inputs(self, args: tuple, kwargs: dict) -> dict:
        """The image inputs of one call of the vision tower, named as the model's forward names them."""
        return {"pixel_values": kwargs.get("pixel_values", args[0] if args else None)}

    @abstractmethod
    def slots_per_image(self, vision: dict, visual_slots: int) -> list[int]:
        """How many slots each image of a forward's ``vision`` inputs fills."""
