"""Stable identities of vision towers and LLMs, the keys of the built-in sink profiles.

    vision_tower_id(config.vision_config, width=1024)   # "clip-vit-l-14-336"
    llm_id(config.text_config)                           # "llama-2-7b"

Known towers and LLMs get their published names; anything else a descriptive id made of its
config type and shape, which no built-in profile matches (so the user is told to profile it).
"""

from __future__ import annotations

KNOWN_LLMS = {("llama", 4096, 32): "llama-2-7b", ("llama", 5120, 40): "llama-2-13b", ("qwen2", 3584, 28): "qwen2-7b"}


def vision_tower_id(vision_config, width: int) -> str:
    kind, patch = vision_config.model_type, vision_config.patch_size
    size = getattr(vision_config, "image_size", "dyn")  # Qwen-VL's ViT has no fixed input size
    if kind == "clip_vision_model" and width == 1024 and patch == 14:
        return f"clip-vit-l-14-{size}"
    if kind == "siglip_vision_model" and width == 1152 and patch == 14:
        return f"siglip-so400m-14-{size}"
    return f"{kind}-h{width}-p{patch}-{size}"


def llm_id(text_config) -> str:
    shape = (text_config.model_type, text_config.hidden_size, text_config.num_hidden_layers)
    return KNOWN_LLMS.get(shape, f"{shape[0]}-h{shape[1]}-l{shape[2]}")
