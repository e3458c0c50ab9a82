"""Chat formats and exact label masking: a LLaVA-format conversation + its images -> tokens, labels.

    from sinktrain.data.chat import encode, encode_prompt
    example = encode(conversations, tokenizer, "qwen2_vl", image_token_id, image_slots=[36], max_length=2048)
    if example is None:
        drops += 1          # overflowed or nothing left to learn from; the caller counts drops
    prompt_ids = encode_prompt(conversations[:1], tokenizer, "qwen2_vl", image_token_id, [36])

``image_slots`` says how many LLM slots each image of the sample takes (576 for LLaVA-1.5; for
Qwen it depends on the image's size), in the order the images appear. Training examples and
generation prompts go through the same rendering and tokenization, so a prompt is exactly the
prefix of the training example up to its last prompt token. Formats: ``sinktrain.data.chat.formats``;
the masking engine: ``sinktrain.data.chat.engine``.
"""

from __future__ import annotations

from typing import Sequence

from sinktrain.data.chat.conversation import IMAGE_PLACEHOLDER, check_image_count, check_roles, to_turns
from sinktrain.data.chat.engine import IGNORE_INDEX, OVERFLOW_POLICIES, Example, check_length_args, fit_length, tokenize
from sinktrain.data.chat.formats import FORMATS, ChatFormat, Specials
from sinktrain.errors import SinkTrainError

__all__ = ["FORMATS", "IGNORE_INDEX", "OVERFLOW_POLICIES", "Example", "encode", "encode_prompt", "get_format"]


def get_format(name: str) -> ChatFormat:
    if name not in FORMATS:
        raise SinkTrainError(
            f"Unknown conversation template {name!r}. Fix: use one of: {', '.join(sorted(FORMATS))} "
            "(or add an entry to sinktrain.data.chat.formats.FORMATS)."
        )
    return FORMATS[name]


def single_token(tokenizer, text: str | None, what: str, chat: ChatFormat) -> str:
    ids = tokenizer(text, add_special_tokens=False).input_ids if text else []
    if len(ids) != 1:
        raise SinkTrainError(
            f"template {chat.name!r} ({chat.family}) needs {what} {text!r} as one token, but this tokenizer "
            f"{'has none' if not text else f'splits it into {len(ids)} pieces'}: the template does not fit this model. "
            "Fix: use the model's own template (leave --template unset for the backbone's default)."
        )
    return text


def specials(chat: ChatFormat, tokenizer, image_token_id: int) -> Specials:
    if not 0 <= image_token_id < len(tokenizer):
        raise SinkTrainError(
            f"image_token_id {image_token_id} is outside the tokenizer's {len(tokenizer)} tokens. "
            "Fix: add the model's image token as a special token and pass its id."
        )
    for token in chat.tokens:
        if token not in ("bos", "eos"):
            single_token(tokenizer, token, "the special token", chat)
    image = tokenizer.convert_ids_to_tokens(image_token_id)
    if len(tokenizer(image * 2, add_special_tokens=False).input_ids) != 2:
        raise SinkTrainError(
            f"image_token_id {image_token_id} ({image!r}) is not a special token of this tokenizer: repeated, it "
            "tokenizes into another number of tokens. Fix: pass the model's image token id (config.image_token_id)."
        )
    bos = single_token(tokenizer, tokenizer.bos_token, "a bos token", chat) if "bos" in chat.tokens else None
    eos = single_token(tokenizer, tokenizer.eos_token, "an eos token", chat) if "eos" in chat.tokens else None
    return Specials(image, bos, eos)


def check_fits(chat: ChatFormat, turns, images: int) -> None:
    """Refuse conversations the format cannot express."""
    if chat.single_turn and len(turns) != 1:
        raise SinkTrainError(
            f"Template {chat.name!r} takes a single question/answer pair, but the conversation has {len(turns)} "
            "questions. Fix: use the family's instruction-tuning template (v1, qwen2_vl) for multi-turn data."
        )
    if chat.requires_image and not images:
        raise SinkTrainError(
            f"Template {chat.name!r} needs an image ({IMAGE_PLACEHOLDER} in the first human turn), but the conversation "
            "has none. Fix: use the family's instruction-tuning template (v1, qwen2_vl) for text-only data."
        )
    if chat.max_images is not None and images > chat.max_images:
        raise SinkTrainError(
            f"{IMAGE_PLACEHOLDER} appears {images} times in one conversation; template {chat.name!r} ({chat.family}) "
            f"takes at most {chat.max_images} image per sample. Fix: keep a single {IMAGE_PLACEHOLDER} in the first human turn."
        )
    if chat.images_in_first_turn_only and any(turn.images for turn in turns[1:]):
        later = next(k for k, turn in enumerate(turns) if k and turn.images)
        raise SinkTrainError(
            f"{IMAGE_PLACEHOLDER} appears in turn {2 * later}, but template {chat.name!r} takes it only in the first human "
            f"turn. Fix: move {IMAGE_PLACEHOLDER} into the first human turn."
        )


def render(conversations: Sequence[dict], tokenizer, template: str, image_token_id: int, image_slots: list[int], open_question: bool) -> Example:
    chat = get_format(template)
    check_roles(conversations, open_question)
    turns = to_turns(conversations)
    check_image_count(turns, list(image_slots))
    check_fits(chat, turns, len(image_slots))
    pieces = chat.render(turns, specials(chat, tokenizer, image_token_id), list(image_slots))
    return tokenize(pieces, tokenizer, tokenizer.bos_token_id if chat.bos else None)


def encode(
    conversations: Sequence[dict],
    tokenizer,
    template: str,
    image_token_id: int,
    image_slots: list[int],
    max_length: int | None = None,
    on_overflow: str = "truncate",
) -> Example | None:
    """Tokenize a conversation for training; None when the sample must be dropped (see fit_length).

    Errors (SinkTrainError) are for malformed data or arguments."""
    check_length_args(max_length, on_overflow)
    example = render(conversations, tokenizer, template, image_token_id, image_slots, open_question=False)
    return fit_length(example, max_length, on_overflow)


def encode_prompt(conversations: Sequence[dict], tokenizer, template: str, image_token_id: int, image_slots: list[int]) -> list[int]:
    """The ids a model sees at generation time: the conversation up to its last (open) question and
    the assistant's turn opening, tokenized as in training."""
    return render(conversations, tokenizer, template, image_token_id, image_slots, open_question=True).input_ids
