"""Configs of sinktrain's Hugging Face exports: the stock family's config plus one ``sinktrain``
field saying what was attached to the stock model (modeling_sinktrain.py builds it)::

    "sinktrain": {
      "method": "diysink",             # or "lsg" (gates on chosen layers)
      "stock_model_type": "llava",     # the family's own model_type
      "sink_rule": {...},              # sinks.SinkRule: how V-sinks (and L-sinks) are found
      "sink_first": true,              # DIYSink: each image's V-sink slots first
      "rew": {"sentence_encoder": "sentence-transformers/all-MiniLM-L6-v2", "embedding_width": 384,
              "hidden": 64},           # DIYSink with ReW (the MLP's weights are the model's rew.*)
      "lsg": {"layers": [10], "groups": 2, "scale_layout_slots": false}   # LSG
    }

Each export has its own ``model_type`` (``sinktrain_<family>``): with the stock one, transformers
would silently build the stock class and drop the method's weights.
"""

from __future__ import annotations

from transformers import (
    DeepseekVLConfig,
    DeepseekVLHybridConfig,
    LlavaConfig,
    LlavaOnevisionConfig,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
)


class SinkTrainLlavaConfig(LlavaConfig):
    model_type = "sinktrain_llava"
    sinktrain: dict | None = None


class SinkTrainLlavaOnevisionConfig(LlavaOnevisionConfig):
    model_type = "sinktrain_llava_onevision"
    sinktrain: dict | None = None


class SinkTrainQwen2VLConfig(Qwen2VLConfig):
    model_type = "sinktrain_qwen2_vl"
    sinktrain: dict | None = None


class SinkTrainQwen2_5_VLConfig(Qwen2_5_VLConfig):
    model_type = "sinktrain_qwen2_5_vl"
    sinktrain: dict | None = None


class SinkTrainDeepseekVLConfig(DeepseekVLConfig):
    model_type = "sinktrain_deepseek_vl"
    sinktrain: dict | None = None


class SinkTrainDeepseekVLHybridConfig(DeepseekVLHybridConfig):
    model_type = "sinktrain_deepseek_vl_hybrid"
    sinktrain: dict | None = None


CONFIGS: dict[str, type] = {config.model_type.removeprefix("sinktrain_"): config for config in (
    SinkTrainLlavaConfig, SinkTrainLlavaOnevisionConfig, SinkTrainQwen2VLConfig, SinkTrainQwen2_5_VLConfig,
    SinkTrainDeepseekVLConfig, SinkTrainDeepseekVLHybridConfig,
)}  # stock model_type -> export config class
