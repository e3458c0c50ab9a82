"""Exact-match evaluation by greedy generation, overall and per task category (tools/evaluate.py).

    from sinktrain.data.eval_set import read_eval_set
    from sinktrain.evaluate import evaluate
    results = evaluate(backbone, read_eval_set(pattern, limit=100), gating=None, batch_size=16)
    print(results.table()); json.dump(results.to_dict(), open("results.json", "w"))

Each sample's first question becomes a generation prompt (``build_prompt``, so it is tokenized
exactly as in training); prompts are batched with LEFT padding so every row's last prefill token
is its last prompt token, which is where LSG's gates read ``h_l^last``. Image and text-only
samples go into separate batches: a text-only batch is generated without any ``pixel_values``.
Accuracies are percentages. With gates attached, r_sink (the gate's softmax share of the V-sink
group, paper Fig. 8) is recorded per sample at the prefill of every gated layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.data.eval_set import EvalSample
from sinktrain.data.templates import build_prompt
from sinktrain.eval_table import results_table

OVERALL = "overall"


@dataclass
class Prediction:
    key: str
    category: str
    answer: str
    prediction: str

    @property
    def correct(self) -> bool:
        return normalise(self.prediction) == normalise(self.answer)


def normalise(text: str) -> str:
    """Exact-match form: stripped, lower case, one trailing '.' ignored ("Red." == "red")."""
    text = text.strip().lower()
    return text[:-1].rstrip() if text.endswith(".") else text


def accuracy(predictions: list[Prediction]) -> float:
    return 100.0 * sum(p.correct for p in predictions) / len(predictions) if predictions else 0.0


def mean_std(values: list[float]) -> dict[str, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    # population std: a category with a single sample has spread 0, not NaN
    return {"mean": tensor.mean().item(), "std": tensor.std(correction=0).item(), "n": len(values)}


@dataclass
class Results:
    predictions: list[Prediction]
    r_sink: dict[int, list[float]] = field(default_factory=dict)  # layer -> r_sink per sample (prediction order)

    @property
    def categories(self) -> list[str]:
        return sorted({p.category for p in self.predictions})

    def of(self, category: str) -> list[Prediction]:
        return [p for p in self.predictions if category in (OVERALL, p.category)]

    def accuracy(self, category: str = OVERALL) -> float:
        return accuracy(self.of(category))

    def per_category(self) -> dict[str, dict]:
        """{category: {"accuracy": %, "count": n}}, with an "overall" entry last."""
        return {c: {"accuracy": self.accuracy(c), "count": len(self.of(c))} for c in [*self.categories, OVERALL]}

    def r_sink_stats(self) -> dict[str, dict[str, dict[str, float]]]:
        """{layer: {category: {mean, std, n}}} of r_sink, with an "overall" entry per layer."""
        stats = {}
        for layer, values in sorted(self.r_sink.items()):
            stats[str(layer)] = {
                c: mean_std([v for v, p in zip(values, self.predictions) if c in (OVERALL, p.category)])
                for c in [*self.categories, OVERALL]
            }
        return stats

    def to_dict(self, with_r_sink: bool = True) -> dict:
        out = {
            "accuracy": self.accuracy(),
            "per_category": self.per_category(),
            "predictions": [vars(p) | {"correct": p.correct} for p in self.predictions],
        }
        if with_r_sink and self.r_sink:
            out["r_sink"] = self.r_sink_stats()
        return out

    def table(self, with_r_sink: bool = True) -> str:
        return results_table(self, with_r_sink)


# -- generation ----------------------------------------------------------------------------


def prompt_ids(backbone: Backbone, sample: EvalSample, template: str) -> list[int]:
    tokens = backbone.num_image_tokens if sample.image is not None else 0
    return build_prompt(sample.question, backbone.tokenizer, template, backbone.image_token_id, tokens)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
    return ids, mask


def model_inputs(backbone: Backbone, samples: list[EvalSample], template: str) -> dict[str, torch.Tensor]:
    parameter = next(backbone.model.parameters())
    ids, mask = left_pad([prompt_ids(backbone, s, template) for s in samples], backbone.tokenizer.pad_token_id)
    inputs = {"input_ids": ids.to(parameter.device), "attention_mask": mask.to(parameter.device)}
    if samples[0].image is not None:  # batches are all-image or all-text (see evaluate)
        pixels = backbone.preprocess_images([s.image for s in samples])
        inputs["pixel_values"] = pixels.to(parameter.device, parameter.dtype)
    return inputs


@torch.no_grad()
def generate_batch(backbone: Backbone, samples: list[EvalSample], template: str, gating, max_new_tokens: int) -> list[str]:
    inputs = model_inputs(backbone, samples, template)
    if gating is not None:
        gating.prepare(inputs["input_ids"])  # default last_prompt_index: the last column, right for left padding
    tokenizer = backbone.tokenizer
    out = backbone.model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def batches(samples: list[EvalSample], batch_size: int) -> list[list[int]]:
    """Indices of samples, grouped into image-only and text-only batches of at most batch_size."""
    groups = [[i for i, s in enumerate(samples) if s.image is not None], [i for i, s in enumerate(samples) if s.image is None]]
    return [group[start:start + batch_size] for group in groups for start in range(0, len(group), batch_size)]


def evaluate(
    backbone: Backbone,
    samples: list[EvalSample],
    gating=None,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    template: str | None = None,
) -> Results:
    """Greedy answers to every sample's first question, scored by exact match."""
    template = template or backbone.default_template
    texts: list[str | None] = [None] * len(samples)
    ratios: dict[int, list[float | None]] = {}
    backbone.model.eval()
    for indices in batches(samples, batch_size):
        if gating is not None:
            gating.last_ratios.clear()  # it holds the last forward's r; only this batch's prefill may count
        batch_texts = generate_batch(backbone, [samples[i] for i in indices], template, gating, max_new_tokens)
        for i, text in zip(indices, batch_texts):
            texts[i] = text
        for layer, r in (gating.last_ratios.items() if gating is not None else ()):
            slots = ratios.setdefault(layer, [None] * len(samples))
            for i, value in zip(indices, r[:, 0].tolist()):  # r[:, 0] is r_sink
                slots[i] = value
    predictions = [Prediction(s.key, s.category, s.answer, t) for s, t in zip(samples, texts)]
    return Results(predictions, ratios)
