"""LLaVA conversation templates and label masking, as pure functions over a Hugging Face tokenizer.

Turns a LLaVA-format conversation (``[{"from": "human"|"gpt", "value": str}, ...]``) into token ids
and labels for training (``build_example``) or into the prompt a model sees at generation time
(``build_prompt``), so that training and inference tokenize identically:

    from sinktrain.data.templates import build_example, build_prompt
    ex = build_example(sample["conversations"], tokenizer, "v1", image_token_id=32000,
                       num_image_tokens=576, max_length=2048)
    if ex is None:
        drops += 1          # overflowed or nothing left to learn from; the caller counts drops

Templates follow LLaVA's ``conv_templates`` (haotian-liu/LLaVA):

- ``v1`` (Vicuna v1, stage-2 instruction tuning):
  ``SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>...``
- ``plain`` (stage-1 captions): ``<image>caption\\n``; the question text is discarded and the target
  has no ``</s>``, as in LLaVA's ``preprocess_plain``.

Tokenization is by segments rather than LLaVA's tokenize-the-whole-string-then-count-lengths, so
the label mask is exact by construction::

    [bos] + enc(prompt_1) + enc(answer_1) + [eos] + enc(prompt_2) + enc(answer_2) + [eos] ...

with ``enc(t) = tokenizer(t, add_special_tokens=False).input_ids``. ``prompt_k`` ends with
``"ASSISTANT:"`` and ``answer_k`` is the raw answer: the space between them comes from
sentencepiece's dummy prefix (``enc("a1")`` starts with ``"▁a"``), which is what whole-string
tokenization of ``"ASSISTANT: a1"`` gives too. Each segment gets that prefix, so ``prompt_k`` for
k > 1 starts with ``"▁USER"``, as LLaVA's legacy Llama tokenizer also produces after ``</s>``.
The ``<image>`` placeholder is never tokenized: the text is split around it (like LLaVA's
``tokenizer_image_token``) and it becomes ``num_image_tokens`` copies of ``image_token_id``.
Labels are -100 on bos, prompts and image tokens; answer tokens and their closing eos are labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from sinktrain.errors import SinkTrainError

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips
IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT = "human", "gpt"
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
OVERFLOW_POLICIES = ("truncate", "drop")

# One question with its answer; the answer is None for the open question of a generation prompt.
Turn = tuple[str, "str | None"]


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered conversation: some text, the image placeholder, or a closing eos."""

    kind: str  # "text" | "image" | "eos"
    text: str = ""
    is_target: bool = False  # True for answer text and its eos: these become labels


@dataclass(frozen=True)
class Template:
    """A conversation format: how turns render to segments, and which conversations it accepts."""

    name: str
    render: Callable[[Sequence[Turn]], list[Segment]]
    single_turn: bool  # stage-1 caption formats have exactly one question and one answer
    requires_image: bool


@dataclass
class Example:
    """A tokenized training sample; ``labels`` is aligned with ``input_ids``."""

    input_ids: list[int]
    labels: list[int]
    last_prompt_index: int  # last token of the first prompt (right before the first answer): LSG's gate signal
    num_image_tokens: int  # 0 for text-only samples


# ---------------------------------------------------------------------------------------------
# Templates


def _split_image(text: str) -> list[Segment]:
    """Prompt text as segments, with the (at most one) ``<image>`` cut out as its own segment."""
    before, found, after = text.partition(IMAGE_PLACEHOLDER)
    if not found:
        return [Segment("text", text)]
    return [Segment("text", before), Segment("image"), Segment("text", after)]


def _render_v1(turns: Sequence[Turn]) -> list[Segment]:
    """Vicuna v1 (LLaVA ``conv_vicuna_v1``: sep " ", sep2 "</s>", roles USER/ASSISTANT)."""
    segments: list[Segment] = []
    for k, (question, answer) in enumerate(turns):
        system = VICUNA_V1_SYSTEM + " " if k == 0 else ""
        segments += _split_image(f"{system}USER: {question} ASSISTANT:")
        if answer is not None:
            segments += [Segment("text", answer, is_target=True), Segment("eos", is_target=True)]
    return segments


def _render_plain(turns: Sequence[Turn]) -> list[Segment]:
    """LLaVA ``conv_llava_plain`` as used by ``preprocess_plain``: image, then caption + "\\n".

    The question text is dropped (LLaVA replaces it by the bare image token) and no eos closes the
    caption: stage 1 only teaches the projector to describe the image.
    """
    ((_, answer),) = turns
    segments = [Segment("image")]
    if answer is not None:
        segments.append(Segment("text", answer + "\n", is_target=True))
    return segments


TEMPLATES: dict[str, Template] = {
    "v1": Template("v1", _render_v1, single_turn=False, requires_image=False),
    "plain": Template("plain", _render_plain, single_turn=True, requires_image=True),
}


def get_template(name: str) -> Template:
    """Look a template up by name, with an error that lists the known ones."""
    if name not in TEMPLATES:
        known = ", ".join(sorted(TEMPLATES))
        raise SinkTrainError(
            f"Unknown conversation template {name!r}. Fix: use one of: {known} "
            "(or add an entry to sinktrain.data.templates.TEMPLATES)."
        )
    return TEMPLATES[name]


# ---------------------------------------------------------------------------------------------
# Validation


def _check_roles(conversations: Sequence[dict], open_question: bool) -> None:
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


def _check_image(conversations: Sequence[dict], num_image_tokens: int) -> bool:
    """Whether the sample has an image; errors when placeholder and image-token count disagree."""
    counts = [turn["value"].count(IMAGE_PLACEHOLDER) for turn in conversations]
    if sum(counts) > 1:
        raise SinkTrainError(
            f"{IMAGE_PLACEHOLDER} appears {sum(counts)} times in one conversation; one image per "
            f"sample is supported. Fix: keep a single {IMAGE_PLACEHOLDER} in the first human turn."
        )
    if sum(counts[1:]) > 0:
        turn = next(i for i, c in enumerate(counts) if c)
        raise SinkTrainError(
            f"{IMAGE_PLACEHOLDER} appears in turn {turn}, but only the first human turn may hold it. "
            f"Fix: move {IMAGE_PLACEHOLDER} into the first human turn."
        )
    has_image = counts[0] == 1
    if num_image_tokens < 0:
        raise SinkTrainError(f"num_image_tokens is {num_image_tokens}. Fix: pass 0 or more.")
    if has_image and num_image_tokens == 0:
        raise SinkTrainError(
            f"The conversation has {IMAGE_PLACEHOLDER} but num_image_tokens is 0. Fix: pass the "
            "image processor's image-token count, or remove the placeholder for a text-only sample."
        )
    if not has_image and num_image_tokens > 0:
        raise SinkTrainError(
            f"num_image_tokens is {num_image_tokens} but the conversation has no {IMAGE_PLACEHOLDER}. "
            "Fix: pass num_image_tokens=0 for a text-only sample, or put "
            f"{IMAGE_PLACEHOLDER} in the first human turn."
        )
    return has_image


def _check_fits_template(template: Template, n_questions: int, has_image: bool) -> None:
    """Refuse conversations the template cannot express (e.g. multi-turn captions)."""
    if template.single_turn and n_questions != 1:
        raise SinkTrainError(
            f"Template {template.name!r} takes a single question/answer pair, but the conversation "
            f"has {n_questions} questions. Fix: use template 'v1' for multi-turn data."
        )
    if template.requires_image and not has_image:
        raise SinkTrainError(
            f"Template {template.name!r} needs an image ({IMAGE_PLACEHOLDER} in the first human "
            "turn), but the conversation has none. Fix: use template 'v1' for text-only data."
        )


def _special_ids(tokenizer, image_token_id: int) -> tuple[int, int]:
    """The tokenizer's bos and eos ids, after checking that they and ``image_token_id`` exist."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise SinkTrainError(
            f"The tokenizer has no bos or eos token (bos={bos}, eos={eos}); LLaVA templates need both. "
            "Fix: use the language model's own (Llama/Vicuna) tokenizer."
        )
    if not 0 <= image_token_id < len(tokenizer):
        raise SinkTrainError(
            f"image_token_id {image_token_id} is outside the tokenizer's {len(tokenizer)} tokens. "
            f"Fix: add {IMAGE_PLACEHOLDER} as a special token and pass its id."
        )
    return bos, eos


# ---------------------------------------------------------------------------------------------
# Tokenization


def _normalise_image(question: str) -> str:
    """Move ``<image>`` to the front as ``"<image>\\n" + question``, like LLaVA's preprocess_multimodal."""
    if IMAGE_PLACEHOLDER not in question:
        return question
    rest = question.replace(IMAGE_PLACEHOLDER, "").strip()
    return (IMAGE_PLACEHOLDER + "\n" + rest).strip()


def _to_turns(conversations: Sequence[dict]) -> list[Turn]:
    """Pair each question with its answer (None for a trailing open question)."""
    values = [turn["value"] for turn in conversations]
    values[0] = _normalise_image(values[0])
    questions, answers = values[0::2], values[1::2]
    return [(q, answers[k] if k < len(answers) else None) for k, q in enumerate(questions)]


def _encode(
    segments: Sequence[Segment], tokenizer, bos: int, eos: int, image_token_id: int, num_image_tokens: int
) -> tuple[list[int], list[int], int]:
    """Segments -> (input_ids, labels, last_prompt_index), masking every non-target token."""
    input_ids, labels = [bos], [IGNORE_INDEX]
    last_prompt_index = None
    for seg in segments:
        if seg.kind == "image":
            ids = [image_token_id] * num_image_tokens
        elif seg.kind == "eos":
            ids = [eos]
        else:
            ids = tokenizer(seg.text, add_special_tokens=False).input_ids if seg.text else []
        if seg.is_target and last_prompt_index is None:
            last_prompt_index = len(input_ids) - 1
        input_ids += ids
        labels += ids if seg.is_target else [IGNORE_INDEX] * len(ids)
    if last_prompt_index is None:  # a generation prompt: it ends where the first answer would start
        last_prompt_index = len(input_ids) - 1
    return input_ids, labels, last_prompt_index


def _fit_length(example: Example, max_length: int | None, on_overflow: str) -> Example | None:
    """Apply the overflow policy; None means drop (cut inside the first prompt, or no labels left)."""
    if max_length is not None and len(example.input_ids) > max_length:
        # The image lies inside the first prompt, so a cut at or before the first answer token
        # covers both "cut inside the image" and "no answer left".
        if on_overflow == "drop" or max_length <= example.last_prompt_index + 1:
            return None
        example = Example(
            example.input_ids[:max_length],
            example.labels[:max_length],
            example.last_prompt_index,
            example.num_image_tokens,
        )
    if all(label == IGNORE_INDEX for label in example.labels):
        return None
    return example


def _check_length_args(max_length: int | None, on_overflow: str) -> None:
    if on_overflow not in OVERFLOW_POLICIES:
        raise SinkTrainError(
            f"on_overflow is {on_overflow!r}. Fix: use one of: {', '.join(OVERFLOW_POLICIES)}."
        )
    if max_length is not None and max_length < 1:
        raise SinkTrainError(f"max_length is {max_length}. Fix: pass a positive length or None.")


def _tokenize(conversations, tokenizer, template, image_token_id, num_image_tokens, open_question):
    """Shared path of build_example and build_prompt: validate, render, encode."""
    tmpl = get_template(template)
    _check_roles(conversations, open_question)
    has_image = _check_image(conversations, num_image_tokens)
    turns = _to_turns(conversations)
    _check_fits_template(tmpl, len(turns), has_image)
    bos, eos = _special_ids(tokenizer, image_token_id)
    return _encode(tmpl.render(turns), tokenizer, bos, eos, image_token_id, num_image_tokens)


def build_example(
    conversations: Sequence[dict],
    tokenizer,
    template: str,
    image_token_id: int,
    num_image_tokens: int,
    max_length: int | None = None,
    on_overflow: str = "truncate",
) -> Example | None:
    """Tokenize a LLaVA conversation for training; None when the sample must be dropped.

    ``on_overflow="truncate"`` cuts ids and labels together at ``max_length`` unless the cut would
    fall inside the image tokens or before the first answer token (then None); ``"drop"`` returns
    None for any overflow. Errors (SinkTrainError) are for malformed data or arguments.
    """
    _check_length_args(max_length, on_overflow)
    input_ids, labels, last = _tokenize(
        conversations, tokenizer, template, image_token_id, num_image_tokens, open_question=False
    )
    return _fit_length(Example(input_ids, labels, last, num_image_tokens), max_length, on_overflow)


def build_prompt(
    conversations: Sequence[dict],
    tokenizer,
    template: str,
    image_token_id: int,
    num_image_tokens: int,
) -> list[int]:
    """The ids a model sees at generation time: the conversation up to its last (open) question,
    ending with the "ASSISTANT:" prompt (or the image, for ``plain``), tokenized as in training."""
    input_ids, _, _ = _tokenize(
        conversations, tokenizer, template, image_token_id, num_image_tokens, open_question=True
    )
    return input_ids
