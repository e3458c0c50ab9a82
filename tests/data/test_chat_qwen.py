"""sinktrain.data.chat's ``qwen2_vl`` format with the tiny Qwen tokenizer and its ChatML chat template.

Shown: the ids equal the tokenizer's own ``apply_chat_template`` rendering, tokenized as one string
with each ``<|image_pad|>`` expanded to the image's slots (as Qwen2VLProcessor does), for training
conversations and generation prompts; exact ids and labels on multi-turn, text-only and truncated
examples (labels: each answer and its ``<|im_end|>``, never the "\\n" after it); no bos; images in
any human turn and several per sample; a leading space stays; the truncation rules; the errors.
"""

from contextlib import contextmanager

import pytest

from sinktrain.data.chat import encode, encode_prompt
from sinktrain.demo.qwen2_vl import chat_template, train_tokenizer
from sinktrain.errors import SinkTrainError

from chat_expect import M, conv, whole

# Written out here rather than imported, so a typo in the module's copy fails the tests.
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
USER = "<|im_start|>user\n"
ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"  # closes the question, opens the answer
END = "<|im_end|>"


@pytest.fixture(scope="module")
def tok():
    t = train_tokenizer()
    t.chat_template = chat_template()
    return t


@pytest.fixture(scope="module")
def pad(tok):
    return tok.convert_tokens_to_ids("<|image_pad|>")


def image(n):
    return "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>"


def templated(tok, messages, slots, generation=False):
    """The processor's ids: the chat template's text, each image's pad expanded, one tokenization."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    for n in slots:  # Qwen2VLProcessor: one image at a time, in order
        text = text.replace("<|image_pad|>", "<|placeholder|>" * n, 1)
    return tok(text.replace("<|placeholder|>", "<|image_pad|>")).input_ids


def said(tok, labels):
    return tok.decode([label for label in labels if label != M])


def user(*content):
    return {"role": "user", "content": [{"type": "image"} if c is None else {"type": "text", "text": c} for c in content]}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_tokenizer_fixture_is_qwen_like(tok, pad):
    assert tok.bos_token is None and tok("What").input_ids == tok("What", add_special_tokens=False).input_ids
    for special in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"):
        assert len(tok(special).input_ids) == 1
    assert tok(image(3)).input_ids[1:-1] == [pad] * 3


MULTI = conv("<image>\nWhat colour are the objects?", "The objects are red.", "How many objects are in the image?", "There are 3 objects.")
MULTI_PARTS = (
    SYSTEM + USER + image(4) + "What colour are the objects?" + ASSISTANT, "The objects are red." + END,
    "\n" + USER + "How many objects are in the image?" + ASSISTANT, "There are 3 objects." + END, "\n",
)


def test_multi_turn_with_image(tok, pad):
    ex = encode(MULTI, tok, "qwen2_vl", pad, [4])
    ids, labels = whole(tok, *MULTI_PARTS)
    assert ex.input_ids == ids and ex.labels == labels
    assert said(tok, ex.labels) == "The objects are red.<|im_end|>There are 3 objects.<|im_end|>"
    assert ex.input_ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # no bos
    assert tok.decode(ex.input_ids[-2:]) == "<|im_end|>\n" and ex.labels[-2:] == [ex.input_ids[-2], M]
    assert ex.last_prompt_index == len(tok(MULTI_PARTS[0]).input_ids) - 1  # the FIRST answer's start
    start = ids.index(pad) - 1
    assert ex.image_spans == [(start, start + 6)]  # <|vision_start|>, 4 pads, <|vision_end|>
    messages = [user(None, "What colour are the objects?"), assistant("The objects are red."),
                user("How many objects are in the image?"), assistant("There are 3 objects.")]
    assert ex.input_ids == templated(tok, messages, [4])


def test_text_only(tok, pad):
    ex = encode(conv("What colour are the objects?", "The objects are red."), tok, "qwen2_vl", pad, [])
    ids, labels = whole(tok, SYSTEM + USER + "What colour are the objects?" + ASSISTANT, "The objects are red." + END, "\n")
    assert ex.input_ids == ids and ex.labels == labels and ex.image_spans == []
    assert said(tok, ex.labels) == "The objects are red.<|im_end|>"
    messages = [{"role": "user", "content": "What colour are the objects?"}, assistant("The objects are red.")]
    assert ex.input_ids == templated(tok, messages, [])


def test_images_in_later_turns_and_several_images(tok, pad):
    c = conv("What colour are the objects?", "Red.", "<image>\n<image>\nHow many objects are there?", "3.", "And here?<image>", "2.")
    ex = encode(c, tok, "qwen2_vl", pad, [2, 5, 3])
    ids, labels = whole(
        tok, SYSTEM + USER + "What colour are the objects?" + ASSISTANT, "Red." + END,
        "\n" + USER + image(2) + image(5) + "How many objects are there?" + ASSISTANT, "3." + END,
        "\n" + USER + "And here?" + image(3) + ASSISTANT, "2." + END, "\n",
    )
    assert ex.input_ids == ids and ex.labels == labels
    assert said(tok, ex.labels) == "Red.<|im_end|>3.<|im_end|>2.<|im_end|>"
    assert [ids[a:b] for a, b in ex.image_spans] == [tok(image(n)).input_ids for n in (2, 5, 3)]
    assert all(a < b <= c for (a, b), (c, _) in zip(ex.image_spans, ex.image_spans[1:]))
    messages = [user("What colour are the objects?"), assistant("Red."), user(None, None, "How many objects are there?"),
                assistant("3."), user("And here?", None), assistant("2.")]
    assert ex.input_ids == templated(tok, messages, [2, 5, 3])


def test_answer_with_leading_space_keeps_its_space(tok, pad):
    c = conv("<image>\nWhat colour are the objects?", " The objects are red.")
    ex = encode(c, tok, "qwen2_vl", pad, [4])
    ids, labels = whole(tok, SYSTEM + USER + image(4) + "What colour are the objects?" + ASSISTANT, " The objects are red." + END, "\n")
    assert ex.input_ids == ids and ex.labels == labels
    assert said(tok, ex.labels) == " The objects are red.<|im_end|>"
    assert ex.input_ids == templated(tok, [user(None, "What colour are the objects?"), assistant(" The objects are red.")], [4])
    unspaced = encode(conv(c[0]["value"], "The objects are red."), tok, "qwen2_vl", pad, [4])
    assert said(tok, unspaced.labels) == "The objects are red.<|im_end|>" and unspaced.input_ids != ex.input_ids


# --- the tokenizer's own chat template --------------------------------------------------------

CASES = [  # (LLaVA-format questions and answers, slots per image, the same conversation as messages)
    (("<image>\nWhat shape are the objects?", "Circles."), [4],
     [user(None, "What shape are the objects?"), assistant("Circles.")]),
    (("What shape are the objects?\n<image>", "Circles."), [6],
     [user("What shape are the objects?\n", None), assistant("Circles.")]),
    (("Describe the image.", "A blue square.", "<image>\nAnd this one?", "Two red circles."), [3],
     [user("Describe the image."), assistant("A blue square."), user(None, "And this one?"), assistant("Two red circles.")]),
    (("<image>\nCount the shapes in the image.", "3", "<image>\n<image>\nAnd in these?", " 2 and 5"), [2, 4, 1],
     [user(None, "Count the shapes in the image."), assistant("3"), user(None, None, "And in these?"), assistant(" 2 and 5")]),
]


@pytest.mark.parametrize("values, slots, messages", CASES)
def test_training_ids_equal_the_chat_template(tok, pad, values, slots, messages):
    ex = encode(conv(*values), tok, "qwen2_vl", pad, slots)
    assert ex.input_ids == templated(tok, messages, slots)
    assert said(tok, ex.labels) == "".join(answer + END for answer in values[1::2])


@pytest.mark.parametrize("values, slots, messages", CASES)
def test_generation_prompt_equals_the_chat_template_and_the_training_prefix(tok, pad, values, slots, messages):
    prompt = encode_prompt(conv(*values[:-1]), tok, "qwen2_vl", pad, slots)
    assert prompt == templated(tok, messages[:-1], slots, generation=True)
    assert tok.decode(prompt).endswith("<|im_end|>\n<|im_start|>assistant\n")
    ex = encode(conv(*values), tok, "qwen2_vl", pad, slots)
    last_answer = len(ex.input_ids) - len(tok(values[-1] + END + "\n").input_ids)
    assert ex.labels[last_answer - 1] == M and ex.labels[last_answer] != M
    assert prompt == ex.input_ids[:last_answer]


def test_first_prompt_is_the_prefix_up_to_last_prompt_index(tok, pad):
    ex = encode(MULTI, tok, "qwen2_vl", pad, [4])
    assert encode_prompt(MULTI[:1], tok, "qwen2_vl", pad, [4]) == ex.input_ids[: ex.last_prompt_index + 1]


# --- overflow --------------------------------------------------------------------------------


def test_truncate_cuts_ids_and_labels_together(tok, pad):
    ids, labels = whole(tok, *MULTI_PARTS)
    first_answer = len(tok(MULTI_PARTS[0]).input_ids)
    for max_length in (len(ids) - 1, len(ids) - 9, first_answer + 1):
        cut = encode(MULTI, tok, "qwen2_vl", pad, [4], max_length)
        assert (cut.input_ids, cut.labels) == (ids[:max_length], labels[:max_length])
        assert cut.last_prompt_index == first_answer - 1
    shortest = encode(MULTI, tok, "qwen2_vl", pad, [4], first_answer + 1)
    assert [label for label in shortest.labels if label != M] == ids[first_answer:][:1]  # one answer token
    assert said(tok, shortest.labels) and "The objects".startswith(said(tok, shortest.labels))
    assert encode(MULTI, tok, "qwen2_vl", pad, [4], len(ids), "drop").input_ids == ids
    assert encode(MULTI, tok, "qwen2_vl", pad, [4], len(ids) - 1, "drop") is None


def test_cut_inside_an_image_or_before_the_first_answer_drops(tok, pad):
    ex = encode(MULTI, tok, "qwen2_vl", pad, [4])
    (start, end), = ex.image_spans
    for max_length in (ex.last_prompt_index + 1, ex.last_prompt_index, end, end - 1, start + 1, 1):
        assert encode(MULTI, tok, "qwen2_vl", pad, [4], max_length) is None


def test_cut_before_a_later_image_drops(tok, pad):
    """The sample's pixels hold both images: a cut that loses any of the second image's tokens drops it."""
    c = conv("What colour are the objects?", "The objects are red.", "<image>\nHow many objects are there?", "3.")
    ex = encode(c, tok, "qwen2_vl", pad, [5])
    (start, end), = ex.image_spans
    assert ex.last_prompt_index + 1 < start
    for max_length in (start, start + 3, end - 1):
        assert encode(c, tok, "qwen2_vl", pad, [5], max_length) is None
    kept = encode(c, tok, "qwen2_vl", pad, [5], end)
    assert (kept.input_ids, kept.labels) == (ex.input_ids[:end], ex.labels[:end])
    assert said(tok, kept.labels) == "The objects are red.<|im_end|>"


# --- errors ----------------------------------------------------------------------------------


@contextmanager
def raises(match):
    """A SinkTrainError matching ``match`` whose message says how to fix it."""
    with pytest.raises(SinkTrainError, match=match) as info:
        yield
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("template", ["v1", "plain"])
def test_llava_templates_do_not_fit_the_qwen_tokenizer(tok, pad, template):
    with raises(rf"template '{template}' \(LLaVA-1.5\) needs a bos token None as one token, but this tokenizer has none"):
        encode(conv("<image>\nWhat colour are the objects?", "Red."), tok, template, pad, [4])


def test_unknown_template_lists_known(tok, pad):
    with raises(r"Unknown conversation template 'chatml'.*use one of: deepseek, deepseek_plain, onevision, onevision_plain, plain, qwen2_vl, qwen2_vl_plain, v1"):
        encode(conv("q", "a"), tok, "chatml", pad, [])


@pytest.mark.parametrize(
    "values, slots, match",
    [
        (("<image>\nq", "a <image>"), [4, 4], r"appears in turn 1, a gpt answer"),
        (("q", "a", "q2", "<image>"), [4], r"appears in turn 3, a gpt answer"),
        (("q", "a"), [4], r"0 <image> marker\(s\) but the sample has 1 image\(s\)"),
        (("<image>\nq", "a", "<image>\nq2", "a2"), [4], r"2 <image> marker\(s\) but the sample has 1 image\(s\)"),
    ],
)
def test_image_errors(tok, pad, values, slots, match):
    with raises(match):
        encode(conv(*values), tok, "qwen2_vl", pad, slots)


def test_role_and_argument_errors(tok, pad):
    with raises(r"turn 1 is from 'human' but 'gpt' was expected"):
        encode([{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}], tok, "qwen2_vl", pad, [])
    with raises(r"must end with a human question"):
        encode_prompt(conv("q", "a"), tok, "qwen2_vl", pad, [])
    with raises(r"on_overflow is 'wrap'"):
        encode(conv("q", "a"), tok, "qwen2_vl", pad, [], 10, "wrap")
    with raises(r"max_length is 0"):
        encode(conv("q", "a"), tok, "qwen2_vl", pad, [], 0)
    with raises(rf"image_token_id {len(tok)} is outside"):
        encode(conv("q", "a"), tok, "qwen2_vl", len(tok), [])
