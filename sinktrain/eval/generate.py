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
from dataclasses import dataclass, field

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


@dataclass
class Answers:
    """Generated texts (None where another rank generated), per-sample method details, r_sink per
    gated layer (None where not generated here) and the time spent, in seconds."""

    texts: list[str | None]
    details: list[dict | None]
    r_sink: dict[int, list[float | None]] = field(default_factory=dict)
    clock: dict[str, float] = field(default_factory=lambda: {"method": 0.0, "total": 0.0})


def generate_answers(
    backbone: Backbone,
    samples: list[EvalSample],
    gating=None,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    template: str | None = None,
    method: EvalMethod | None = None,
    progress: bool = False,
    share: tuple[int, int] = (0, 1),
) -> Answers:
    """Greedy answers to the samples' first questions, for the batches ``share`` = (rank, world)
    owns: the batches are formed over all samples first, so every sample is generated in exactly
    the batch (same rows, same padding) it would be in on one rank."""
    template = backbone.check_template(template)
    method = method or EvalMethod("stock")
    rank, world = share
    mine = batches(samples, batch_size)[rank::world]
    answers = Answers([None] * len(samples), [None] * len(samples))
    backbone.model.eval()
    bar = tqdm(total=sum(map(len, mine)), desc="generating", unit="sample", disable=not progress)
    for indices in mine:
        generate_into(answers, backbone, samples, indices, gating, method, template, max_new_tokens)
        bar.update(len(indices))
    bar.close()
    return answers


def generate_into(answers: Answers, backbone, samples, indices, gating, method, template, max_new_tokens) -> None:
    if gating is not None:
        gating.last_ratios.clear()  # it holds the last forward's r; only this batch's prefill may count
    batch = [samples[i] for i in indices]
    start = time.perf_counter()
    context, batch_details = method.prepare(batch)
    prepared = time.perf_counter()
    with context:
        batch_texts = generate_batch(backbone, batch, template, max_new_tokens)
    answers.clock["method"] += prepared - start
    answers.clock["total"] += time.perf_counter() - start
    for i, text, detail in zip(indices, batch_texts, batch_details or [None] * len(indices)):
        answers.texts[i], answers.details[i] = text, detail
    for layer, r in (gating.last_ratios.items() if gating is not None else ()):
        slots = answers.r_sink.setdefault(layer, [None] * len(samples))
        for i, value in zip(indices, r[:, 0].tolist()):  # r[:, 0] is r_sink
            slots[i] = value


def timing(clock: dict[str, float], samples: int) -> dict[str, float]:
    count = max(samples, 1)
    return {"seconds_per_sample": clock["total"] / count, "method_seconds_per_sample": clock["method"] / count}


def evaluate(backbone: Backbone, samples: list[EvalSample], gating=None, method: EvalMethod | None = None, **generation) -> Results:
    """Greedy answers to every sample's first question, scored by exact match; ``method``
    (sinktrain.eval.methods) prepares each batch, and its preparation time is kept apart;
    ``generation``: generate_answers' batch_size, max_new_tokens, template, progress."""
    method = method or EvalMethod("stock")
    answers = generate_answers(backbone, samples, gating, method=method, **generation)
    predictions = [Prediction(s.key, s.category, s.answer, t, d) for s, t, d in zip(samples, answers.texts, answers.details)]
    return Results(predictions, answers.r_sink, method.name, timing(answers.clock, len(samples)), method.summary(), method.loaded)
