"""sinktrain's Hugging Face exports: the stock family's model class with the method attached the
way sinktrain trained it (DIYSink's DualMLP connector and sink-first order, or LSG's gates), by the
same code (this folder), so the export runs the forward it was trained with.

    model = AutoModelForImageTextToText.from_pretrained(export_dir, trust_remote_code=True)

Generation, batching, dtypes and ``device_map`` work as for the stock class: only the connector is
replaced (DIYSink) or gate modules and hooks are added (LSG). A DIYSink model with ReW needs each
sample's question first: ``model.set_questions(["...", ...])`` (one per batch row). This folder imports only torch and
transformers, so the export needs no sinktrain.
"""

from __future__ import annotations

from transformers import (
    DeepseekVLForConditionalGeneration,
    DeepseekVLHybridForConditionalGeneration,
    LlavaForConditionalGeneration,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

from .configuration_sinktrain import (
    SinkTrainDeepseekVLConfig,
    SinkTrainDeepseekVLHybridConfig,
    SinkTrainLlavaConfig,
    SinkTrainLlavaOnevisionConfig,
    SinkTrainQwen2_5_VLConfig,
    SinkTrainQwen2VLConfig,
)
from .errors import SinkTrainError
from .method import attach_method


class SinkTrainMixin:
    """Builds the stock model, then attaches what ``config.sinktrain`` names (method.py)."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.slotted = attach_method(self, config.sinktrain)
        self.post_init()

    def set_questions(self, questions: list[str]):
        """DIYSink with ReW: each batch row's question, before its forward or generate() (the ReW MLP
        weighs the V-sink and other visual tokens from the question's sentence embedding)."""
        rew = getattr(self.slotted, "rew", None)
        if rew is None:
            raise SinkTrainError("this model has no ReW (sinktrain.rew is not in its config): it needs no questions")
        return rew.set_questions(questions)


class SinkTrainLlavaForConditionalGeneration(SinkTrainMixin, LlavaForConditionalGeneration):
    config_class = SinkTrainLlavaConfig


class SinkTrainLlavaOnevisionForConditionalGeneration(SinkTrainMixin, LlavaOnevisionForConditionalGeneration):
    config_class = SinkTrainLlavaOnevisionConfig


class SinkTrainQwen2VLForConditionalGeneration(SinkTrainMixin, Qwen2VLForConditionalGeneration):
    config_class = SinkTrainQwen2VLConfig


class SinkTrainQwen2_5_VLForConditionalGeneration(SinkTrainMixin, Qwen2_5_VLForConditionalGeneration):
    config_class = SinkTrainQwen2_5_VLConfig


class SinkTrainDeepseekVLForConditionalGeneration(SinkTrainMixin, DeepseekVLForConditionalGeneration):
    config_class = SinkTrainDeepseekVLConfig


class SinkTrainDeepseekVLHybridForConditionalGeneration(SinkTrainMixin, DeepseekVLHybridForConditionalGeneration):
    config_class = SinkTrainDeepseekVLHybridConfig


MODELS: dict[str, type] = {model.config_class.model_type.removeprefix("sinktrain_"): model for model in (
    SinkTrainLlavaForConditionalGeneration, SinkTrainLlavaOnevisionForConditionalGeneration,
    SinkTrainQwen2VLForConditionalGeneration, SinkTrainQwen2_5_VLForConditionalGeneration,
    SinkTrainDeepseekVLForConditionalGeneration, SinkTrainDeepseekVLHybridForConditionalGeneration,
)}  # stock model_type -> export model class
