"""LLaVA-format conversations, checked and split into turns whose questions hold image markers.

Every family reads the same shards: ``[{"from": "human"|"gpt", "value": str}, ...]`` with
``<image>`` where an image goes. ``to_turns`` pairs each question with its answer (None for the
open question of a generation prompt) and cuts each question at its ``<image>`` markers, so a
chat format can place images its own way (LLaVA-1.5 moves the one image to the front; Qwen keeps
every image where it stands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sinktrain.errors import SinkTrainError

IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT = "human", "gpt"
IMAGE = None  # the marker for an image among a question's text parts


@dataclass(frozen=True)
class Turn:
    parts: tuple  # text (str) and IMAGE markers, in order
    answer: str | None
    question: str = ""  # as written, with its <image> markers

    @property
    def images(self) -> int:
        return sum(part is IMAGE for part in self.parts)

    def text(self) -> str:
        """The question with the image markers removed (and nothing else)."""
        return self.question.replace(IMAGE_PLACEHOLDER, "")


def check_roles(conversations: Sequence[dict], open_question: bool) -> None:
    """Alternating human/gpt turns starting with human; ending with gpt unless ``open_question``."""
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise SinkTrainError(
            "Conversation is empty or not a list. Fix: pass a list of "
            '{"from": "human"|"gpt", "value": str} turns starting with a human turn.'
        )
    for i, turn in enumerate(conversations):
        expected = HUMAN if i % 2 == 0 else GPT
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise SinkTrainError(
                f"Conversation turn {i} is not a {{'from': ..., 'value': str}} dict: {turn!r}. "
                "Fix: give every turn a 'from' role and a string 'value'."
            )
        if turn.get("from") != expected:
            raise SinkTrainError(
                f"Conversation turn {i} is from {turn.get('from')!r} but {expected!r} was expected: "
                "turns must alternate human, gpt, human, ... starting with human. "
                "Fix: repair or drop this sample in the data preparation."
            )
    last = conversations[-1]["from"]
    if open_question and last != HUMAN:
        raise SinkTrainError(
            "A generation prompt must end with a human question, but the last turn is from 'gpt'. "
            "Fix: pass the conversation up to and including the question to answer."
        )
    if not open_question and last != GPT:
        raise SinkTrainError(
            "A training conversation must end with a gpt answer, but the last turn is from 'human'. "
            "Fix: drop the unanswered trailing question."
        )


def split_images(question: str) -> tuple:
    """Text parts and IMAGE markers; the newline LLaVA data puts after ``<image>`` is a separator, not text."""
    chunks = question.split(IMAGE_PLACEHOLDER)
    parts: list = []
    for index, chunk in enumerate(chunks):
        if index:
            parts.append(IMAGE)
            chunk = chunk.removeprefix("\n")
        if chunk:
            parts.append(chunk)
    return tuple(parts)


def to_turns(conversations: Sequence[dict]) -> list[Turn]:
    values = [turn["value"] for turn in conversations]
    for index, answer in enumerate(values[1::2]):
        if IMAGE_PLACEHOLDER in answer:
            raise SinkTrainError(
                f"{IMAGE_PLACEHOLDER} appears in turn {2 * index + 1}, a gpt answer; images belong in human turns. "
                "Fix: move it into the question."
            )
    questions, answers = values[0::2], values[1::2]
    return [Turn(split_images(q), answers[k] if k < len(answers) else None, q) for k, q in enumerate(questions)]


def count_images(turns: list[Turn]) -> int:
    return sum(turn.images for turn in turns)


def check_image_count(turns: list[Turn], image_slots: list[int]) -> None:
    """The conversation's ``<image>`` markers and the sample's images must agree one to one."""
    if any(slots < 1 for slots in image_slots):
        raise SinkTrainError(f"image slot counts {image_slots}: every image fills at least one slot. Fix: pass the image inputs' slot counts.")
    images, markers = len(image_slots), count_images(turns)
    if markers != images:
        raise SinkTrainError(
            f"the conversation has {markers} {IMAGE_PLACEHOLDER} marker(s) but the sample has {images} image(s). "
            f"Fix: put one {IMAGE_PLACEHOLDER} in a human turn per image (tools/make_shards.py adds a missing one)."
        )
