"""Load a model by path or hub id as the right Backbone, with its sink profile.

The family comes from ``config.model_type`` (a directory saved by ``save_pretrained`` loads
whatever its origin); an unsupported type is refused with the list of supported ones. Under
ZeRO-3 call ``load_backbone`` while an ``HfDeepSpeedConfig`` is alive (sinktrain.train.run
does): ``from_pretrained`` then partitions the weights at load time instead of materialising them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.deepseek_vl import DeepseekVLBackbone, DeepseekVLHybridBackbone
from sinktrain.backbones.identity import llm_id
from sinktrain.backbones.llava import LlavaBackbone
from sinktrain.backbones.llava_onevision import LlavaOnevisionBackbone
from sinktrain.backbones.processor import load_processor
from sinktrain.backbones.profiles import FIND_DIMS_HINT, SinkProfile, known_profile, load_profile
from sinktrain.backbones.qwen2_vl import Qwen2VLBackbone
from sinktrain.errors import SinkTrainError

FAMILIES: tuple[type[Backbone], ...] = (
    LlavaBackbone, Qwen2VLBackbone, LlavaOnevisionBackbone, DeepseekVLBackbone, DeepseekVLHybridBackbone,
)
BY_MODEL_TYPE: dict[str, type[Backbone]] = {model_type: family for family in FAMILIES for model_type in family.model_types}

PROFILE_FILE = "sink_profile.json"  # a model directory may carry its own profile


def supported() -> str:
    return ", ".join(f"{model_type} ({family.hf_classes[model_type].__name__})" for model_type, family in BY_MODEL_TYPE.items())


def load_config(model: str):
    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise SinkTrainError(
            f"cannot load a model config from {model!r} ({err}); pass a local model directory in "
            f"transformers format, a hub id such as llava-hf/llava-1.5-7b-hf, or demo:FAMILY"
        ) from err


def backbone_class(config) -> type[Backbone]:
    family = BY_MODEL_TYPE.get(config.model_type)
    if family is None:
        architectures = ", ".join(getattr(config, "architectures", None) or ["?"])
        raise SinkTrainError(
            f"model type {config.model_type!r} ({architectures}) is not supported; supported model types: {supported()}"
        )
    return family


def resolve_profile(model: str, config, profile_path: str | None) -> SinkProfile:
    """--sink_profile FILE, else the model directory's own profile, else a built-in one; checked
    against the model's widths and layers before any weight is loaded."""
    family = backbone_class(config)
    if profile_path:
        profile = load_profile(profile_path)
    elif (Path(model) / PROFILE_FILE).is_file():
        profile = load_profile(Path(model) / PROFILE_FILE)
    else:
        tower = family.vision_tower_id(config)
        profile = known_profile(tower, llm_id(config.text_config))
        if profile is None:
            raise SinkTrainError(f"no built-in sink profile for vision tower {tower!r}; {FIND_DIMS_HINT}")
    family.check_profile(config, profile)
    return profile


def load_backbone(
    model: str,
    sink_profile: str | None = None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    profile: SinkProfile | None = None,
) -> Backbone:
    """``profile`` (an object) overrides the file / model-dir / built-in lookup; find_sink_dims.py
    passes a provisional one while it discovers the real profile."""
    config = load_config(model)
    family = backbone_class(config)
    profile = profile or resolve_profile(model, config, sink_profile)
    hf_model = family.hf_classes[config.model_type].from_pretrained(model, dtype=dtype, attn_implementation=attn_implementation)
    return family(hf_model, load_processor(model), profile)
