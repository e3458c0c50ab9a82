"""DIYSink's CoT routing (hard selection, "To Sink or Not to Sink", Sec. 4.2): before answering,
the model itself answers two questions about each sample, and the answers pick the visual tokens
the LLM gets for the real question.

    router = CotRouter(backbone)                      # default prompts, or CotPrompts.load(path)
    decisions = router.decide(samples)                # one Decision per sample, kept for inspection
    with router.selecting(decisions):                 # each row's chosen slots, for generate()
        backbone.model.generate(...)

1. image: is the image symbolic/simple or real-world/complex;
2. query: does the question need global (holistic) or local reasoning.

simple + global -> the V-sinks only; complex + local -> the non-sink tokens only; anything else
-> both. An answer that names neither option (or both) cannot route: the sample keeps both token
sets and is counted (``CotRouter.unmatched``), never an error. Text-only samples have no visual
tokens to choose and are not asked. The prompts and each option's keywords are configurable
(``CotPrompts.load``: a JSON file shaped like ``DEFAULT_PROMPTS``); the option labels are fixed,
since the routing rule is written in them.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from sinktrain.modeling.slot_select import SELECTIONS, selecting_slots
from sinktrain.data.chat.conversation import IMAGE_PLACEHOLDER
from sinktrain.data.encode import first_question
from sinktrain.data.eval_set import EvalSample
from sinktrain.errors import SinkTrainError

LABELS = {"image": ("simple", "complex"), "query": ("global", "local")}
ROUTES = {("simple", "global"): "sink", ("complex", "local"): "non"}  # every other pair: "both"
DEFAULT_PROMPTS = {
    "image": {
        "question": "Is this image symbolic or simple (a diagram, chart, icon, text or a plain drawing), or a real-world, "
        "complex scene (a photograph)? Answer with one word: simple or complex.",
        "options": {"simple": ["simple", "symbolic"], "complex": ["complex", "real-world", "real"]},
    },
    "query": {
        "question": "Question: {question}\nDoes answering this question need global reasoning about the whole image, or "
        "local reasoning about a detail? Answer with one word: global or local.",
        "options": {"global": ["global", "holistic", "whole"], "local": ["local", "detail"]},
    },
}


@dataclass(frozen=True)
class CotPrompts:
    image_question: str
    image_options: dict[str, tuple[str, ...]]
    query_question: str  # holds "{question}", where the sample's question goes
    query_options: dict[str, tuple[str, ...]]

    @classmethod
    def from_dict(cls, spec: dict, source: str = "the CoT prompts") -> "CotPrompts":
        hint = f"{source} must look like sinktrain.diysink.cot.DEFAULT_PROMPTS"
        if set(spec) != set(LABELS):
            raise SinkTrainError(f"{hint}: keys {sorted(LABELS)}, not {sorted(spec)}")
        parts = {}
        for step, labels in LABELS.items():
            entry = spec[step]
            if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) or not isinstance(entry.get("options"), dict):
                raise SinkTrainError(f"{hint}: {step!r} needs a 'question' string and an 'options' object")
            if set(entry["options"]) != set(labels):
                raise SinkTrainError(f"{hint}: {step!r} options must be exactly {list(labels)} (the routing rule's labels), not {sorted(entry['options'])}")
            options = {label: tuple(k.strip().lower() for k in entry["options"][label]) for label in labels}
            if not all(options.values()) or not all(k for keys in options.values() for k in keys):
                raise SinkTrainError(f"{hint}: every {step!r} option needs at least one non-empty keyword")
            parts[step] = (entry["question"], options)
        if "{question}" not in parts["query"][0]:
            raise SinkTrainError(f"{hint}: the 'query' question must contain {{question}}, where the sample's question goes")
        return cls(parts["image"][0], parts["image"][1], parts["query"][0], parts["query"][1])

    @classmethod
    def load(cls, path: str | Path | None) -> "CotPrompts":
        if path is None:
            return cls.from_dict(DEFAULT_PROMPTS)
        try:
            spec = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SinkTrainError(f"cannot read the CoT prompts {path}: {err}") from err
        return cls.from_dict(spec, str(path))

    def to_dict(self) -> dict:
        return {
            "image": {"question": self.image_question, "options": {k: list(v) for k, v in self.image_options.items()}},
            "query": {"question": self.query_question, "options": {k: list(v) for k, v in self.query_options.items()}},
        }


def match_option(answer: str, options: dict[str, tuple[str, ...]]) -> str | None:
    """The one option whose keywords occur as words in ``answer``; None for none or several."""
    text = " ".join(re.findall(r"[\w-]+", answer.lower()))
    found = [label for label, keywords in options.items() if any(re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text) for k in keywords)]
    return found[0] if len(found) == 1 else None


@dataclass
class Decision:
    route: str  # "sink", "non" or "both"
    image: str | None = None  # the matched label; None when the answer matched neither (or no image)
    query: str | None = None
    image_answer: str = ""
    query_answer: str = ""
    reason: str = "routed"  # or "unmatched" (fell back to both), "text-only"

    def to_dict(self) -> dict:
        return asdict(self)


def decide(image_answer: str, query_answer: str, prompts: CotPrompts) -> Decision:
    image, query = match_option(image_answer, prompts.image_options), match_option(query_answer, prompts.query_options)
    if image is None or query is None:
        return Decision("both", image, query, image_answer, query_answer, "unmatched")
    return Decision(ROUTES.get((image, query), "both"), image, query, image_answer, query_answer)


def asking(sample: EvalSample, question: str) -> EvalSample:
    """The sample with its question replaced by ``question`` (its images kept, placeholders first)."""
    placeholders = (IMAGE_PLACEHOLDER + "\n") * len(sample.images)
    return EvalSample(sample.key, sample.category, [{"from": "human", "value": placeholders + question}], "", sample.images)


class CotRouter:
    """Decides each sample's visual tokens from the model's own answers (``ask``: samples -> answers;
    default: greedy generation on the backbone, up to ``max_new_tokens`` tokens)."""

    def __init__(self, backbone, prompts: CotPrompts | None = None, ask: Callable[[list[EvalSample]], list[str]] | None = None,
                 template: str | None = None, max_new_tokens: int = 5):
        from sinktrain.eval.generate import generate_batch

        self.backbone, self.prompts = backbone, prompts or CotPrompts.load(None)
        template = backbone.check_template(template)
        self.ask = ask or (lambda samples: generate_batch(backbone, samples, template, max_new_tokens))
        self.unmatched = 0

    def decide(self, samples: list[EvalSample]) -> list[Decision]:
        with_images = [s for s in samples if s.images]
        routed = iter(self._route(with_images) if with_images else [])
        decisions = [next(routed) if s.images else Decision("both", reason="text-only") for s in samples]
        self.unmatched += sum(d.reason == "unmatched" for d in decisions)
        return decisions

    def _route(self, samples: list[EvalSample]) -> list[Decision]:
        """The two answers of every sample (each question asked of the whole batch at once), decided."""
        query = self.prompts.query_question
        image_answers = self.ask([asking(s, self.prompts.image_question) for s in samples])
        query_answers = self.ask([asking(s, query.replace("{question}", first_question(s.question))) for s in samples])
        return [decide(image, question, self.prompts) for image, question in zip(image_answers, query_answers)]

    @contextmanager
    def selecting(self, decisions: list[Decision]):
        """generate() inside the block gives row i the visual slots ``decisions[i]`` chose."""
        routes = [d.route for d in decisions]

        def keep(state) -> torch.Tensor:
            if len(routes) != state.visual.shape[0]:
                raise SinkTrainError(f"CoT routing decided {len(routes)} samples, the forward has {state.visual.shape[0]} rows")
            masks = {route: SELECTIONS[route](state) for route in set(routes) & set(SELECTIONS)}  # each selection once
            return torch.stack([masks[r][i] if r in masks else torch.ones_like(state.visual[i]) for i, r in enumerate(routes)])

        if all(route == "both" for route in routes):  # every slot stays: no mask to build at each step
            yield
            return
        with selecting_slots(self.backbone, keep, by_mask=True):
            yield
