"""Exact-match evaluation by greedy generation, overall and per task category (tools/evaluate.py).

    from sinktrain.data.eval_set import read_eval_set
    from sinktrain.eval import evaluate
    results = evaluate(backbone, read_eval_set(pattern, limit=100), gating=None, batch_size=16)
    print(results.table()); json.dump(results.to_dict(), open("results.json", "w"))

Each sample's first question becomes a generation prompt in the backbone's chat format
(``encode_prompt``: tokenized exactly as in training) with its image through the family's image
inputs; prompts are batched with LEFT padding, so every row's last prefill token is its last
prompt token, which is where LSG's gates read ``h_l^last``. Generation is the stock model's
``generate()``: the same forward path as training, with any method attached by hooks. Image and
text-only samples go into separate batches (a text-only batch has no image inputs). With gates
attached, r_sink (the gate's softmax share of the V-sink group, paper Fig. 8) is recorded per
sample at the prefill of every gated layer. A ``method`` (stock, sink-to-front, DIYSink with ReW
or CoT routing, sink-only, ...: sinktrain.eval.methods) prepares each batch; the time per sample,
and the part of it the method's preparation took, are reported with the accuracy.
"""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from sinktrain.backbones.base import Backbone
from sinktrain.data.chat import encode_prompt
from sinktrain.data.eval_set import EvalSample
from sinktrain.data.images import concat_vision
from sinktrain.eval.methods import EvalMethod
from sinktrain.eval.results import Prediction, Results


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
    return ids, mask


def prompt_inputs(backbone: Backbone, samples: list[EvalSample], template: str) -> dict[str, torch.Tensor]:
    """Left-padded generation prompts and their images, as the model's own keyword arguments."""
    prompts, visions = [], []
    for sample in samples:
        vision, slots = backbone.image_inputs(list(sample.images)) if sample.images else ({}, [])
        prompts.append(encode_prompt(sample.question, backbone.tokenizer, template, backbone.image_token_id, slots))
        visions.append(vision)
    ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
    parameter = next(backbone.model.parameters())
    vision = {name: value.to(parameter.device, parameter.dtype if value.is_floating_point() else None) for name, value in concat_vision(visions).items()}
    return backbone.model_inputs(ids.to(parameter.device), mask.to(parameter.device), vision)


@torch.no_grad()
def generate_batch(backbone: Backbone, samples: list[EvalSample], template: str, max_new_tokens: int) -> list[str]:
    inputs = prompt_inputs(backbone, samples, template)
    tokenizer = backbone.tokenizer
    out = backbone.model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def batches(samples: list[EvalSample], batch_size: int) -> list[list[int]]:
    """Indices of samples, grouped into image-only and text-only batches of at most batch_size."""
    groups = [[i for i, s in enumerate(samples) if s.images], [i for i, s in enumerate(samples) if not s.images]]
    return [group[start:start + batch_size] for group in groups for start in range(0, len(group), batch_size)]


def evaluate(
    backbone: Backbone,
    samples: list[EvalSample],
    gating=None,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    template: str | None = None,
    method: EvalMethod | None = None,
    progress: bool = False,
) -> Results:
    """Greedy answers to every sample's first question, scored by exact match; ``method``
    (sinktrain.eval.methods) prepares each batch, and its preparation time is kept apart."""
    template = backbone.check_template(template)
    method = method or EvalMethod("stock")
    texts: list[str | None] = [None] * len(samples)
    details: list[dict | None] = [None] * len(samples)
    ratios: dict[int, list[float | None]] = {}
    clock = {"method": 0.0, "total": 0.0}
    backbone.model.eval()
    for indices in tqdm(batches(samples, batch_size), desc="evaluating", unit="batch", disable=not progress):
        if gating is not None:
            gating.last_ratios.clear()  # it holds the last forward's r; only this batch's prefill may count
        batch = [samples[i] for i in indices]
        start = time.perf_counter()
        context, batch_details = method.prepare(batch)
        prepared = time.perf_counter()
        with context:
            batch_texts = generate_batch(backbone, batch, template, max_new_tokens)
        clock["method"] += prepared - start
        clock["total"] += time.perf_counter() - start
        for i, text, detail in zip(indices, batch_texts, batch_details or [None] * len(indices)):
            texts[i], details[i] = text, detail
        for layer, r in (gating.last_ratios.items() if gating is not None else ()):
            slots = ratios.setdefault(layer, [None] * len(samples))
            for i, value in zip(indices, r[:, 0].tolist()):  # r[:, 0] is r_sink
                slots[i] = value
    predictions = [Prediction(s.key, s.category, s.answer, t, d) for s, t, d in zip(samples, texts, details)]
    count = max(len(samples), 1)
    timing = {"seconds_per_sample": clock["total"] / count, "method_seconds_per_sample": clock["method"] / count}
    return Results(predictions, ratios, method.name, timing, method.summary(), method.loaded)
