"""Evaluation sets: WebDataset shards of LLaVA records that carry an answer and a task category.

    from sinktrain.data.eval_set import read_eval_set
    samples = read_eval_set("eval/{000000..000001}.tar", limit=200)

A record is evaluated on its first question: the prompt is that human turn, the reference is the
gpt turn after it, and ``record["category"]`` (count, colour, shape, size, caption, other, ...)
says which task it scores for. Shards are read in order (no shuffling), so ``limit`` always picks
the same samples. Unlike training, a broken record is an error, not a skip: an accuracy over a
silently different set would not be comparable with another run's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import webdataset as wds
from PIL import Image

from sinktrain.data.encode import decode_images, image_members
from sinktrain.data.stream import BadSample, expand_shards
from sinktrain.data.chat.conversation import GPT, HUMAN, IMAGE_PLACEHOLDER
from sinktrain.errors import SinkTrainError

FIX = "build the eval set from LLaVA records with a gpt answer and a \"category\" field (tools/make_shards.py keeps both)"


@dataclass(frozen=True)
class EvalSample:
    key: str
    category: str
    question: list[dict]  # the first human turn as a one-turn conversation (a generation prompt)
    answer: str
    images: tuple[Image.Image, ...] = ()  # in <image> order; none for text-only samples


def read_eval_set(spec: str, limit: int | None = None) -> list[EvalSample]:
    """The first ``limit`` samples (all when None) of the shards ``spec`` names, in shard order."""
    if limit is not None and limit < 1:
        raise SinkTrainError(f"--limit {limit}: pass a positive number of samples (or leave it out for all)")
    samples: list[EvalSample] = []
    for raw in wds.WebDataset(expand_shards(spec), shardshuffle=False, empty_check=False):
        samples.append(eval_sample(raw))
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise SinkTrainError(f"--data {spec!r} holds no samples; {FIX}")
    return samples


def where(raw: dict) -> str:
    return f"sample {raw.get('__key__')!r} in {raw.get('__url__')}"


def eval_sample(raw: dict) -> EvalSample:
    record = read_record(raw)
    try:
        images = tuple(decode_images(image_members(raw)))
    except BadSample as err:
        raise SinkTrainError(f"{where(raw)}: {err}; regenerate the shard with tools/make_shards.py") from err
    question, answer = first_exchange(record, raw)
    prompt = [{"from": HUMAN, "value": prompt_text(question, len(images), raw)}]
    return EvalSample(raw["__key__"], category_of(record, raw), prompt, answer, images)


def read_record(raw: dict) -> dict:
    try:
        record = json.loads(raw["json"])
    except (KeyError, TypeError, ValueError) as err:
        raise SinkTrainError(f"{where(raw)} has no readable LLaVA record ({err!r}); {FIX}") from err
    if not isinstance(record, dict):
        raise SinkTrainError(f"{where(raw)} is not a JSON object; {FIX}")
    return record


def first_exchange(record: dict, raw: dict) -> tuple[str, str]:
    turns = record.get("conversations")
    valid = (
        isinstance(turns, list) and len(turns) >= 2
        and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns[:2])
        and turns[0].get("from") == HUMAN and turns[1].get("from") == GPT
    )
    if not valid:
        raise SinkTrainError(
            f"{where(raw)} has no answer (a human question followed by a gpt turn), which evaluation "
            f"compares the generated text with; {FIX}"
        )
    return turns[0]["value"], turns[1]["value"]


def category_of(record: dict, raw: dict) -> str:
    category = record.get("category")
    if not isinstance(category, str) or not category:
        raise SinkTrainError(
            f"{where(raw)} has no \"category\" field, which accuracy is reported per; add one to every record "
            "(e.g. count, colour, shape, size, caption, or other)"
        )
    return category


def prompt_text(question: str, images: int, raw: dict) -> str:
    markers = question.count(IMAGE_PLACEHOLDER)
    if images == 1 and markers == 0:
        return f"{IMAGE_PLACEHOLDER}\n{question}"  # where LLaVA's own loader puts an unmentioned image
    if markers != images:
        raise SinkTrainError(
            f"{where(raw)}: its question has {markers} {IMAGE_PLACEHOLDER} marker(s) but the sample has {images} "
            f"image(s); the first question must mark every image once; {FIX}"
        )
    return question
