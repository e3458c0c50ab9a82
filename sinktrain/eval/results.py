"""Evaluation results: predictions, exact-match accuracy per task category, r_sink statistics.

Accuracies are percentages; ``Results.table()`` is what tools/evaluate.py prints and
``Results.to_dict()`` what it writes as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sinktrain.eval.table import results_table

OVERALL = "overall"


@dataclass
class Prediction:
    key: str
    category: str
    answer: str
    prediction: str
    details: dict | None = None  # what the method decided for this sample (ReW weights, CoT routing)
    judged: bool | None = None  # a benchmark's own verdict (sinktrain.benchmarks); None: exact match

    @property
    def correct(self) -> bool:
        if self.judged is not None:
            return self.judged
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
    method: str = "stock"
    timing: dict[str, float] = field(default_factory=dict)  # seconds_per_sample, method_seconds_per_sample
    summary: dict = field(default_factory=dict)  # method-wide facts (CoT: routes, unmatched)
    setup: dict = field(default_factory=dict)  # what the method was built from (checkpoint, ReW dir, CoT prompts)

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
            "method": self.method,
            "accuracy": self.accuracy(),
            "per_category": self.per_category(),
            "timing": self.timing,
            **({"method_summary": self.summary} if self.summary else {}),
            **({"method_setup": self.setup} if self.setup else {}),
            "predictions": [{k: v for k, v in vars(p).items() if v is not None} | {"correct": p.correct} for p in self.predictions],
        }
        if with_r_sink and self.r_sink:
            out["r_sink"] = self.r_sink_stats()
        return out

    def table(self, with_r_sink: bool = True) -> str:
        return results_table(self, with_r_sink)
