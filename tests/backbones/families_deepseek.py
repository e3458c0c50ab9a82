"""DeepSeek-VL's entries in the contract tests: stock inputs from its own processor, planted ground truth.

The stock inputs come from ``DeepseekVLProcessor`` (its chat template, its image token expansion,
its image processor): transformers' own parts only. The ground truth for V-sinks is the planted
step's output in SigLIP (what it writes into the sink channel, read off its first layer), never
sinktrain's sink rule.
"""

from __future__ import annotations

import torch
from PIL import Image

from sinktrain.demo import deepseek_vl as planted


def deepseek_stock_inputs(backbone, question: str, images: list[Image.Image], answer: str | None = None) -> dict:
    """The processor's chat template and call. A training conversation gets the eos that DeepSeek-VL's
    own format closes every answer with (the HF template leaves the last answer's out)."""
    processor = backbone.processor
    messages = [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    text = processor.apply_chat_template(messages, add_generation_prompt=answer is None, tokenize=False)
    if answer is not None:
        text += processor.tokenizer.eos_token
    return dict(processor(text=text, images=images, return_tensors="pt"))


def planted_step_output(backbone, image: Image.Image) -> torch.Tensor:
    """(patches,) what the planted step of SigLIP layer SINK_LAYER writes into SINK_DIM for one image."""
    captured = {}
    mlp = backbone.vision_layers()[planted.SINK_LAYER].mlp
    hook = mlp.fc1.register_forward_hook(lambda module, args, out: captured.__setitem__("fc1", out.detach()))
    with torch.no_grad():
        backbone.vision_tower(backbone.image_inputs([image])[0]["pixel_values"])
    hook.remove()
    return planted.planted_v_sink_value(mlp, captured["fc1"][0])


def deepseek_planted_slots(backbone, image: Image.Image) -> tuple[set[int], set[int]]:
    """Slots (one per patch) where the step is up must be V-sinks; where it is off none may be."""
    written = planted_step_output(backbone, image)
    must = set((written >= planted.SINK_GAIN / 2).nonzero().flatten().tolist())
    may = set((written > planted.SINK_GAIN / 100).nonzero().flatten().tolist())
    return must, may
