"""The chat formats of each family: how turns and images render to prompt and target pieces.

* ``v1`` (LLaVA-1.5 instruction tuning, Vicuna v1: LLaVA's ``conv_vicuna_v1``)::

      <s>SYSTEM USER: <image>\\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>     (<s>: the bos id)

  The one image moves to the front of the first question, as LLaVA's ``preprocess_multimodal``
  does. The space after ``ASSISTANT:`` belongs to the target, so a generation prompt (which ends
  with ``ASSISTANT:``) is exactly the training prefix and the model learns to emit that space.
* ``plain`` (LLaVA-1.5 projector pretraining, ``preprocess_plain``): ``<s><image>caption\\n``; the
  question is dropped and no ``</s>`` closes the caption. Every family has its equivalent for
  connector pretraining (DIYSink stage 1): ``onevision_plain`` (LLaVA-NeXT's ``plain``, whose Qwen2
  tokenizer adds no bos: ``<image>caption\\n``), ``qwen2_vl_plain`` (the image in its
  ``<|vision_start|>``/``<|vision_end|>`` wrapper, which Qwen's M-RoPE needs), ``deepseek_plain``
  (``<s><image>caption\\n``).
* ``qwen2_vl`` (Qwen2-VL and Qwen2.5-VL: ChatML, as their processors' chat template renders it)::

      <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
      <|vision_start|><|image_pad|>...<|vision_end|>q1<|im_end|>\\n<|im_start|>assistant\\na1<|im_end|>\\n

  Images stay where their ``<image>`` stands, in any human turn; no bos. Targets: each answer and
  its ``<|im_end|>``.
* ``onevision`` (LLaVA-OneVision: the same ChatML, as its HF chat template and LLaVA-NeXT's
  ``conv_qwen_1_5`` render it)::

      <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
      <image>...\\nq1<|im_end|>\\n<|im_start|>assistant\\na1<|im_end|>\\n

  A turn's one image moves to the front of its question, followed by "\\n" (LLaVA-NeXT's
  ``preprocess_multimodal``); several images in a turn stay where their ``<image>`` stands, in the
  question as written (LLaVA-NeXT trains them interleaved). Images in any human turn; no bos, no
  vision_start/end wrappers. Targets as in ``qwen2_vl``. The HF template writes no system turn;
  this one is ``conv_qwen_1_5``'s and the HF converter's reference prompt's.

* ``deepseek`` (DeepSeek-VL and DeepSeek-VL-Hybrid: DeepSeek-VL's ``deepseek`` sft format, as its
  processors' HF chat template renders it)::

      <s>SYSTEM\n\nUser: <image_placeholder>...q1\n\nAssistant: a1</s>User: q2\n\nAssistant: a2</s>

  Images stay where their ``<image>`` stands, in any human turn (LLaVA data's "\n" after a marker
  is a separator: dropped); a question is stripped at its ends, as the HF template strips its
  first and last text. The space after ``Assistant:`` belongs to the target, as in ``v1``. The HF
  template leaves the last answer's ``</s>`` out of a rendered conversation; DeepSeek-VL's own
  format (and its training) closes every answer with it, so it is a target here.

Special token strings are literal text here; ``Specials`` resolves them from the tokenizer. A
format that starts with bos says so (``ChatFormat.bos``) and the engine prepends its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sinktrain.data.chat.conversation import IMAGE, IMAGE_PLACEHOLDER, Turn
from sinktrain.data.chat.engine import Piece

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QWEN_SYSTEM = "You are a helpful assistant."
DEEPSEEK_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)


@dataclass(frozen=True)
class Specials:
    """The special token strings a format writes, as this tokenizer spells them."""

    image: str  # the image-slot token (LLaVA <image>, Qwen <|image_pad|>)
    bos: str | None = None
    eos: str | None = None


@dataclass(frozen=True)
class ChatFormat:
    name: str
    family: str  # who speaks it, for error messages
    render: Callable[[list[Turn], Specials, list[int]], list[Piece]]  # turns, specials, slots per image
    tokens: tuple[str, ...]  # special strings the tokenizer must hold as single tokens ("bos"/"eos" by role)
    bos: bool = False  # the sequence starts with the tokenizer's bos id
    single_turn: bool = False  # projector-pretraining formats: one question, one answer
    requires_image: bool = False
    max_images: int | None = None  # None: any number
    images_in_first_turn_only: bool = False


def _image_pieces(images: list[str], parts: tuple) -> list[Piece]:
    """A question's parts as pieces, each IMAGE replaced by the next expanded image string."""
    pieces = []
    for part in parts:
        pieces.append(Piece(images.pop(0), image=True) if part is IMAGE else Piece(part))
    return pieces


def _render_v1(turns: list[Turn], specials: Specials, slots: list[int]) -> list[Piece]:
    images = [specials.image * n for n in slots]
    pieces = []
    for k, turn in enumerate(turns):
        pieces.append(Piece((VICUNA_V1_SYSTEM + " " if k == 0 else "") + "USER: "))
        if turn.images:  # LLaVA's preprocess_multimodal: "<image>\n" + the question without it, stripped
            pieces += [Piece(images.pop(0), image=True), Piece("\n" + turn.text().strip() + " ASSISTANT:")]
        else:
            pieces.append(Piece(turn.text() + " ASSISTANT:"))
        if turn.answer is not None:
            pieces.append(Piece(" " + turn.answer + specials.eos, target=True))
    return pieces


def _plain(before: str = "", after: str = "") -> Callable[[list[Turn], Specials, list[int]], list[Piece]]:
    """A projector-pretraining format: the image (between ``before`` and ``after``), then the caption."""

    def render(turns: list[Turn], specials: Specials, slots: list[int]) -> list[Piece]:
        pieces = [Piece(before), Piece(specials.image * slots[0], image=True), Piece(after)]
        if turns[0].answer is not None:
            pieces.append(Piece(turns[0].answer + "\n", target=True))
        return [piece for piece in pieces if piece.text]

    return render


def _chatml(turns: list[Turn], question: Callable[[Turn], list[Piece]]) -> list[Piece]:
    """Qwen2's ChatML with its default system turn; ``question`` renders a turn's text and images."""
    pieces = [Piece(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n")]
    for turn in turns:
        pieces += [Piece("<|im_start|>user\n"), *question(turn), Piece("<|im_end|>\n<|im_start|>assistant\n")]
        if turn.answer is not None:
            pieces += [Piece(turn.answer + "<|im_end|>", target=True), Piece("\n")]
    return pieces


def _render_qwen(turns: list[Turn], specials: Specials, slots: list[int]) -> list[Piece]:
    images = [f"<|vision_start|>{specials.image * n}<|vision_end|>" for n in slots]
    return _chatml(turns, lambda turn: _image_pieces(images, turn.parts))


def _onevision_question(images: list[str], turn: Turn) -> list[Piece]:
    # The "\n" after an image is text, so an image span holds only image tokens.
    if turn.images == 1:  # LLaVA-NeXT preprocess_multimodal: "<image>\n" + the question without it, stripped
        return [Piece(images.pop(0), image=True), Piece("\n" + turn.text().strip())]
    chunks = turn.question.split(IMAGE_PLACEHOLDER)  # as written: LLaVA-NeXT trains several images interleaved
    pieces = [Piece(chunks[0])]
    for chunk in chunks[1:]:
        pieces += [Piece(images.pop(0), image=True), Piece(chunk)]
    return pieces


def _render_onevision(turns: list[Turn], specials: Specials, slots: list[int]) -> list[Piece]:
    images = [specials.image * n for n in slots]
    return _chatml(turns, lambda turn: _onevision_question(images, turn))


def _deepseek_question(images: list[str], turn: Turn) -> list[Piece]:
    parts = list(turn.parts)
    if parts and parts[0] is not IMAGE:
        parts[0] = parts[0].lstrip()
    if parts and parts[-1] is not IMAGE:
        parts[-1] = parts[-1].rstrip()
    return _image_pieces(images, tuple(part for part in parts if part != ""))


def _render_deepseek(turns: list[Turn], specials: Specials, slots: list[int]) -> list[Piece]:
    images = [specials.image * n for n in slots]
    pieces = [Piece(DEEPSEEK_SYSTEM + "\n\n")]
    for turn in turns:
        pieces += [Piece("User: "), *_deepseek_question(images, turn), Piece("\n\nAssistant:")]
        if turn.answer is not None:
            pieces.append(Piece(" " + turn.answer + specials.eos, target=True))
    return pieces


# Projector-pretraining formats: one image, its caption as the only target.
PRETRAINING = {"single_turn": True, "requires_image": True, "max_images": 1}
FORMATS: dict[str, ChatFormat] = {
    "v1": ChatFormat("v1", "LLaVA-1.5", _render_v1, ("bos", "eos"), bos=True, max_images=1, images_in_first_turn_only=True),
    "plain": ChatFormat("plain", "LLaVA-1.5", _plain(), ("bos",), bos=True, **PRETRAINING),
    "qwen2_vl": ChatFormat("qwen2_vl", "Qwen2-VL / Qwen2.5-VL", _render_qwen, ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")),
    "onevision": ChatFormat("onevision", "LLaVA-OneVision", _render_onevision, ("<|im_start|>", "<|im_end|>")),
    "deepseek": ChatFormat("deepseek", "DeepSeek-VL / DeepSeek-VL-Hybrid", _render_deepseek, ("bos", "eos"), bos=True),
    "qwen2_vl_plain": ChatFormat(
        "qwen2_vl_plain", "Qwen2-VL / Qwen2.5-VL", _plain("<|vision_start|>", "<|vision_end|>"), ("<|vision_start|>", "<|vision_end|>"),
        **PRETRAINING,
    ),
    "onevision_plain": ChatFormat("onevision_plain", "LLaVA-OneVision", _plain(), (), **PRETRAINING),
    "deepseek_plain": ChatFormat("deepseek_plain", "DeepSeek-VL / DeepSeek-VL-Hybrid", _plain(), ("bos",), bos=True, **PRETRAINING),
}
