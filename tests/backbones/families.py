"""The model families under test: each one's tiny demo model, how its *stock* inputs are built,
and where its planted V-sinks are (ground truth that does not use sinktrain's sink code).

The contract tests (test_contract.py) run once per entry of FAMILIES; a family joins them by adding
an entry here: the demo model name, ``stock_inputs`` (the model's inputs built with transformers'
own components only: processor, chat template) and ``sink_slots`` (which slots of an image must
be V-sinks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from PIL import Image

from families_deepseek import deepseek_planted_slots, deepseek_stock_inputs
from families_onevision import onevision_crops, onevision_planted_slots, onevision_stock_inputs, varied_aspect_ratios


def llava_stock_inputs(backbone, question: str, images: list[Image.Image], answer: str | None = None) -> dict:
    """LlavaProcessor on the v1 prompt ("USER: <image>\\nq ASSISTANT:", LLaVA-1.5's own format)."""
    from sinktrain.data.chat.formats import VICUNA_V1_SYSTEM

    text = f"{VICUNA_V1_SYSTEM} USER: <image>\n{question} ASSISTANT:" + (f" {answer}</s>" if answer is not None else "")
    return dict(backbone.processor(text=text, images=images, return_tensors="pt"))


def qwen_stock_inputs(backbone, question: str, images: list[Image.Image], answer: str | None = None) -> dict:
    """The chat template + image processor, image pads expanded as Qwen2VLProcessor expands them
    (grid t*h*w / merge^2 each); the processor class itself needs torchvision to be built."""
    tokenizer, image_processor = backbone.processor.tokenizer, backbone.processor.image_processor
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=answer is None, tokenize=False)
    vision = dict(image_processor(images, return_tensors="pt"))
    for grid in vision["image_grid_thw"]:
        text = text.replace("<|image_pad|>", "<|placeholder|>" * int(grid.prod() // image_processor.merge_size**2), 1)
    ids = tokenizer(text.replace("<|placeholder|>", "<|image_pad|>"), return_tensors="pt")
    types = (ids["input_ids"] == backbone.image_token_id).int()
    return {**ids, **vision, "mm_token_type_ids": types}


def llava_planted_slots(backbone, image: Image.Image) -> tuple[set[int], set[int]]:
    """Slots (one per patch) where the planted ViT neuron writes more than tau into the sink dim
    (must and may be V-sinks: the same set)."""
    from sinktrain.demo import llava as planted

    captured = {}
    fc1 = backbone.vision_layers()[planted.SINK_LAYER].mlp.fc1
    hook = fc1.register_forward_hook(lambda m, i, out: captured.__setitem__("pre", out[..., planted.SINK_NEURON].detach()))
    with torch.no_grad():
        backbone.vision_tower(backbone.image_inputs([image])[0]["pixel_values"])
    hook.remove()
    written = torch.nn.functional.gelu(captured["pre"][0, 1:]) * planted.SINK_GAIN  # position 0 is CLS
    fired = set((written > planted.TAU_V).nonzero().flatten().tolist())
    return fired, fired


def watermark_slots(backbone, image: Image.Image) -> tuple[set[int], set[int]]:
    """The demo scenes' 16-pixel corner watermark fills exactly one Qwen slot (2x2 patches of 8
    pixels), read off the pixels: that slot must be a V-sink when the watermark is fully visible,
    and no slot without a watermark pixel may be one (an object may cover part of it)."""
    from sinktrain.data.scenes import MARK_COLOUR
    from sinktrain.demo.qwen2_vl import MERGE, PATCH

    side = PATCH * MERGE
    columns = image.width // side
    must, may = set(), set()
    for index in range((image.height // side) * columns):
        x, y = (index % columns) * side, (index // columns) * side
        marked = [image.getpixel((x + i, y + j)) == MARK_COLOUR for i in range(side) for j in range(side)]
        if all(marked):
            must.add(index)
        if any(marked):
            may.add(index)
    return must, may


def same_scenes(scenes: list) -> list:
    return scenes


def flat_pixels(backbone, batch: dict) -> torch.Tensor:
    return batch["pixel_values"]


@dataclass(frozen=True)
class Family:
    name: str  # the demo model (sinktrain.demo.BUILDERS)
    stock_inputs: Callable  # (backbone, question, images, answer=None) -> the stock model's kwargs
    sink_slots: Callable  # (backbone, image) -> (slots that must be V-sinks, slots that may be)
    scenes: Callable = same_scenes  # the demo scenes as this family's tests use them (e.g. other aspect ratios)
    stock_pixels: Callable = flat_pixels  # (backbone, stock batch) -> its pixels as sinktrain's collator gives them


FAMILIES = {
    "llava": Family("llava", llava_stock_inputs, llava_planted_slots),
    "qwen2_vl": Family("qwen2_vl", qwen_stock_inputs, watermark_slots),
    "qwen2_5_vl": Family("qwen2_5_vl", qwen_stock_inputs, watermark_slots),
    "llava_onevision": Family("llava_onevision", onevision_stock_inputs, onevision_planted_slots, varied_aspect_ratios, onevision_crops),
    "deepseek_vl": Family("deepseek_vl", deepseek_stock_inputs, deepseek_planted_slots),
    "deepseek_vl_hybrid": Family("deepseek_vl_hybrid", deepseek_stock_inputs, deepseek_planted_slots),
}


def examples(backbone, chosen) -> list[dict]:
    encoder = backbone.encoder()
    return [dict(encoder.encode(record["conversations"], [image] if image else []), lane=0, index=0, bad=0) for record, image in chosen]


def collate(backbone, chosen):
    batch, _ = backbone.collator()(examples(backbone, chosen))
    return batch


def with_images(scenes, n: int):
    return [s for s in scenes if s[1] is not None][:n]


def text_only(scenes, n: int):
    return [s for s in scenes if s[1] is None][:n]


def capture_llm_inputs(backbone) -> tuple[list[dict], object]:
    """Record what the language model receives (after sinktrain's own hook has run)."""
    store: list[dict] = []

    def record(module, args, kwargs):
        store.append({k: kwargs[k].detach().clone() for k in ("inputs_embeds", "position_ids", "attention_mask") if kwargs.get(k) is not None})

    return store, backbone.language_model.register_forward_pre_hook(record, with_kwargs=True)


def position_rows(captured: dict, row: int, columns: torch.Tensor) -> torch.Tensor:
    """The position ids a captured LLM input gives these columns of one row."""
    positions = captured.get("position_ids")
    if positions is None:  # LLaVA's training forward: the LLM counts positions itself
        positions = torch.arange(captured["inputs_embeds"].shape[1]).unsqueeze(0).expand(captured["inputs_embeds"].shape[0], -1)
    if positions.dim() == 3:  # M-RoPE (t, h, w) rows
        return positions[-3:, row, columns]
    return positions[row, columns]


@torch.no_grad()
def logits_of(model, inputs: dict) -> torch.Tensor:
    return model(**inputs).logits


def perturb(module, scale=0.2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
