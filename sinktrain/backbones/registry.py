"""Load a model by path or hub id as the right Backbone, with its sink profile.

Under ZeRO-3 call this while an ``HfDeepSpeedConfig`` is alive (sinktrain.train.setup does):
``from_pretrained`` then partitions the weights at load time instead of materialising them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.llava import LlavaBackbone, llm_id, vision_tower_id
from sinktrain.backbones.profiles import FIND_DIMS_HINT, SinkProfile, known_profile, load_profile
from sinktrain.errors import SinkTrainError

BACKBONES: dict[str, tuple[type[Backbone], type]] = {
    "llava": (LlavaBackbone, LlavaForConditionalGeneration),
}

PROFILE_FILE = "sink_profile.json"  # a model directory may carry its own profile


def supported() -> str:
    return ", ".join(f"{name} ({cls.class_name})" for name, (cls, _) in BACKBONES.items())


def load_config(model: str):
    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise SinkTrainError(
            f"cannot load a model config from {model!r} ({err}); pass a local model directory in "
            f"transformers format or a hub id such as llava-hf/llava-1.5-7b-hf"
        ) from err


def backbone_class(config) -> tuple[type[Backbone], type]:
    entry = BACKBONES.get(config.model_type)
    if entry is None:
        architectures = ", ".join(getattr(config, "architectures", None) or ["?"])
        raise SinkTrainError(
            f"model type {config.model_type!r} ({architectures}) is not supported; supported backbones: "
            f"{supported()}"
        )
    return entry


def resolve_profile(model: str, config, profile_path: str | None) -> SinkProfile:
    """--sink_profile FILE, else the model directory's own profile, else a built-in one."""
    if profile_path:
        profile = load_profile(profile_path)
    elif (Path(model) / PROFILE_FILE).is_file():
        profile = load_profile(Path(model) / PROFILE_FILE)
    else:
        tower = vision_tower_id(config.vision_config)
        profile = known_profile(tower, llm_id(config.text_config))
        if profile is None:
            raise SinkTrainError(f"no built-in sink profile for vision tower {tower!r}; {FIND_DIMS_HINT}")
    profile.check_fits(config.vision_config.hidden_size, config.text_config.hidden_size)
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
    backbone_cls, model_cls = backbone_class(config)
    profile = profile or resolve_profile(model, config, sink_profile)
    hf_model = model_cls.from_pretrained(model, dtype=dtype, attn_implementation=attn_implementation)
    processor = AutoProcessor.from_pretrained(model)
    return backbone_cls(hf_model, processor, profile)
