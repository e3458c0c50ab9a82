"""One training example per answer of a multi-turn conversation (LSG's gate conditioning).

LSG's gate reads the hidden state of the last prompt token, and key scaling acts on visual keys
that every later token shares, so one forward can gate a conversation only once. Trained on a
whole multi-turn sample, the gate would read the end of the first question for every answer,
while generation reads the end of the question being answered. So LSG trains answer t as its own
example: turns before it as context (unsupervised), only answer t supervised, its gate reading
the end of question t: exactly the prompt ``generate()`` sees with that history.

    examples = turn_examples(encode, conversations)   # [turn 1's, turn 2's, ...]
"""

from __future__ import annotations

import torch

from sinktrain.data.chat import IGNORE_INDEX
from sinktrain.data.chat.conversation import GPT, HUMAN, IMAGE_PLACEHOLDER


def answer_ends(conversations: list[dict]) -> list[int]:
    """For each gpt turn, the length of the conversation up to and including it."""
    return [i + 1 for i, turn in enumerate(conversations) if turn.get("from") == GPT]


def last_answer_only(labels: torch.Tensor) -> torch.Tensor:
    """Labels with every target but the last contiguous run (the last answer) ignored."""
    targets = (labels != IGNORE_INDEX).nonzero().flatten()
    if not len(targets):
        return labels
    end = int(targets[-1])
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    kept = torch.full_like(labels, IGNORE_INDEX)
    kept[start : end + 1] = labels[start : end + 1]
    return kept


def question_of(conversations: list[dict]) -> str:
    """The last human turn's text without image markers (the question this example answers)."""
    last = next((turn.get("value", "") for turn in reversed(conversations) if turn.get("from") == HUMAN), "")
    return " ".join(str(last).replace(IMAGE_PLACEHOLDER, " ").split())


def turn_examples(encode, conversations: list[dict]) -> list[dict]:
    """``encode(turns) -> example | None`` for each answer's prefix, labels cut to that answer.
    Stops at the first turn that no longer fits --max_length (later ones are longer)."""
    examples = []
    for end in answer_ends(conversations):
        example = encode(conversations[:end])
        if example is None:
            break
        labels = last_answer_only(example["labels"])
        if not (labels != IGNORE_INDEX).any():  # truncation cut this answer away
            break
        examples.append({**example, "labels": labels, "question": question_of(conversations[:end])})
    return examples
