"""LLaVA-OneVision's entry in the contract tests: stock inputs, packed sink ground truth, aspect ratios.

Everything here uses transformers' own parts only: the chat template, the image processor, the
token arithmetic of ``LlavaOnevisionProcessor`` (the class itself cannot be built without
torchvision, so its methods run on a small object carrying what they read) and the model's own
forward, never sinktrain's packing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from transformers import LlavaOnevisionProcessor
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from sinktrain.data.chat.formats import QWEN_SYSTEM

# (width, height): 2x2 tiles (8x8 tokens, 8 newlines), 2x2 tiles unpadded to 6x8, 2x1 tiles (8x4):
# other crop counts and newline layouts (a shrunk grid: test_llava_onevision.py)
ASPECTS = ((96, 96), (96, 64), (40, 96))


@dataclass
class OneVisionTokenCounts:
    """What LlavaOnevisionProcessor's slot arithmetic reads of the processor."""

    image_processor: object
    num_image_tokens: int
    vision_aspect_ratio: str
    vision_feature_select_strategy: str = "full"
    _get_number_of_features = LlavaOnevisionProcessor._get_number_of_features
    _get_unpadded_features = LlavaOnevisionProcessor._get_unpadded_features


def stock_slot_counts(backbone, image_sizes: torch.Tensor, images_in_sample: int) -> list[int]:
    config = backbone.model.config
    side, patch = config.vision_config.image_size, config.vision_config.patch_size
    counts = OneVisionTokenCounts(backbone.processor.image_processor, (side // patch) ** 2, config.vision_aspect_ratio)
    if images_in_sample > 1:  # each image of a multi-image sample: one crop and its newline
        return [counts.num_image_tokens + 1] * images_in_sample
    return [counts._get_number_of_features(int(h), int(w), side, side) for h, w in image_sizes.tolist()]


def onevision_stock_inputs(backbone, question: str, images: list[Image.Image], answer: str | None = None) -> dict:
    """The HF chat template (system turn given), the image processor, each <image> expanded as the
    stock processor expands it."""
    tokenizer = backbone.processor.tokenizer
    messages = [
        {"role": "system", "content": [{"type": "text", "text": QWEN_SYSTEM}]},
        {"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=answer is None, tokenize=False)
    vision = dict(backbone.processor.image_processor([images] if len(images) > 1 else images, return_tensors="pt"))
    for count in stock_slot_counts(backbone, vision["image_sizes"], len(images)):
        text = text.replace("<image>", "<|placeholder|>" * count, 1)
    return {**tokenizer(text.replace("<|placeholder|>", "<image>"), return_tensors="pt"), **vision}


def onevision_crops(backbone, batch: dict) -> torch.Tensor:
    """Stock (rows, max crops, 3, S, S), padded per row -> the real crops, flat (single-image rows)."""
    pixels, pinpoints = batch["pixel_values"], backbone.model.config.image_grid_pinpoints
    crops = [image_size_to_num_patches(size, pinpoints, pixels.shape[-1]) for size in batch["image_sizes"]]
    return torch.cat([row[:count] for row, count in zip(pixels, crops)])


def varied_aspect_ratios(scenes: list) -> list:
    """The k-th scene with an image cropped to ASPECTS[k % 3] (from its top-left corner)."""
    varied, k = [], 0
    for record, image in scenes:
        if image is not None:
            image = image.crop((0, 0, *ASPECTS[k % len(ASPECTS)]))
            k += 1
        varied.append((record, image))
    return varied


def onevision_planted_slots(backbone, image: Image.Image) -> tuple[set[int], set[int]]:
    """Slots the planted SigLIP neuron makes V-sinks, read off the model's own packing: the projector's
    output is replaced by the neuron's verdict per crop token (channel 0) and a -1 marker of real
    tokens (channel 1), and the LLM's input embeddings at the image's slots are read back. A slot
    blended from several tokens is a sink when any of them is (> 0); newline slots carry
    ``image_newline`` instead of the marker and are never sinks."""
    from sinktrain.demo import llava_onevision as planted

    inputs = onevision_stock_inputs(backbone, "?", [image])
    mlp = backbone.vision_layers()[planted.SINK_LAYER].mlp
    verdict = {}

    def neuron(module, args, out):
        verdict["sink"] = planted.planted_v_sink_value(mlp, out) > planted.TAU_V

    def replace(module, args, out):
        flags = torch.zeros_like(out)
        flags[..., 0], flags[..., 1] = verdict["sink"].float(), -1.0
        return flags

    embeds = {}
    handles = [
        mlp.fc1.register_forward_hook(neuron),
        backbone.connector.register_forward_hook(replace),
        backbone.language_model.register_forward_pre_hook(lambda m, a, k: embeds.__setitem__("e", k["inputs_embeds"]), with_kwargs=True),
    ]
    with torch.no_grad():
        backbone.model(**inputs)
    for handle in handles:
        handle.remove()
    slots = embeds["e"][inputs["input_ids"] == backbone.image_token_id]
    sinks = set(((slots[:, 0] > 0) & (slots[:, 1] == -1.0)).nonzero().flatten().tolist())
    return sinks, sinks
