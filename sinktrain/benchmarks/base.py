"""What a benchmark is: where its data lives, the prompt it asks, how an answer is read and scored.

A benchmark file (mmstar.py, pope.py, ...) subclasses ``Benchmark`` with its Hub location and
required columns, and three functions: ``item`` (one dataset row without its image columns, and
``images(*columns)`` for that row's images -> the prompt text, its images, the gold answer, the
sub-task it counts for), ``judge`` (a model's response -> the extracted
answer, or None when none can be read, and whether it is right) and ``scores`` (the benchmark's own
metric over every judged item). The runner (``sinktrain.benchmarks.runner``) does the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

ANSWER_LETTER = "Answer with the option's letter from the given choices directly."
SHORT_ANSWER = "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class Item:
    key: str  # its id column's value; "" when the dataset has none (the runner uses the row's position)
    text: str  # the benchmark's prompt text, without image markers
    images: Sequence[Image.Image]  # in the order the prompt shows them (LazyImages: decoded when batched)
    gold: Any  # the reference answer, as the benchmark stores it
    group: str  # the sub-task it is reported under
    info: dict = field(default_factory=dict)  # what judging and scoring need (choices, question type, ...)


@dataclass(frozen=True)
class Judged:
    parsed: Any  # the answer read from the response; None: nothing could be read ("unparsed")
    correct: bool


@dataclass
class Scores:
    headline: dict[str, float]  # the benchmark's reported numbers, e.g. {"accuracy": 61.2}
    tables: dict[str, list[dict]] = field(default_factory=dict)  # title -> rows (first key is the row label)
    notes: list[str] = field(default_factory=list)  # how to read them (formula, departures from the reference)


class Benchmark(ABC):
    name: str
    hub_id: str
    config: str | None = None
    split: str = "test"
    columns: tuple[str, ...] = ()  # required columns (the public dataset's names)
    image_columns: tuple[str, ...] = ("image",)  # decoded only when a batch needs them
    keys_repeat: bool = False  # rows share an id (MME: an image's two questions): numbered "id#1", "id#2"
    max_new_tokens: int = 32  # enough for the answers the prompt asks for; --max_new_tokens overrides
    reference: str = ""  # whose prompt and scoring rule this follows

    @abstractmethod
    def item(self, row: dict, images: Callable[..., LazyImages]) -> Item:
        """One row (image columns left out) -> its prompt text, images, gold answer and sub-task."""

    @abstractmethod
    def judge(self, item: Item, response: str) -> Judged:
        """A response -> the answer read from it (None: unparsed) and whether it is right."""

    @abstractmethod
    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        """The benchmark's own metric over every judged item."""


class LazyImages(Sequence):
    """One row's images, read from the (memory-mapped) dataset and decoded to RGB only when a
    batch is built: a whole benchmark's decoded images would not fit in memory (POPE has 9000).
    ``image_rows`` holds the image columns undecoded, so reading one image decodes only it."""

    def __init__(self, image_rows, index: int, columns: tuple[str, ...]):
        self.image_rows, self.index, self.columns = image_rows, index, columns

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        from datasets import Image as ImageFeature

        encoded = self.image_rows[self.index][self.columns[position]]  # {"bytes", "path"}
        return ImageFeature().decode_example(encoded).convert("RGB")


def lettered(options: list[str], style: str = "{letter}. {option}") -> str:
    """Options one per line: "A. cat\\nB. dog" (the format most reference prompts use)."""
    return "\n".join(style.format(letter=chr(65 + i), option=option) for i, option in enumerate(options))


def percent(hits: int, count: int) -> float:
    return 100.0 * hits / count if count else 0.0


def accuracy_rows(items: list[Item], judged: list[Judged], label: str, key: Callable[[Item], Any] = lambda item: item.group) -> list[dict]:
    """One row per value of ``key`` (sorted, a list value counts under each of its entries): n,
    correct, unparsed, accuracy %; then an "all" row."""
    buckets: dict[str, list[Judged]] = {}
    for item, verdict in zip(items, judged):
        values = key(item)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            buckets.setdefault(str(value), []).append(verdict)
    rows = [accuracy_row(label, name, buckets[name]) for name in sorted(buckets)]
    return rows + [accuracy_row(label, "all", judged)]


def accuracy_row(label: str, name: str, judged: list[Judged]) -> dict:
    hits = sum(j.correct for j in judged)
    return {label: name, "n": len(judged), "correct": hits, "unparsed": sum(j.parsed is None for j in judged), "accuracy": percent(hits, len(judged))}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
