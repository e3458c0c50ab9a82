"""sinktrain.data.chat's ``onevision`` format (LLaVA-OneVision's ChatML) with the tiny Qwen tokenizer.

Shown: exact ids and labels for a single image (moved to the front of its question, "\\n" after
it), several images in one turn (where their markers stand), images in a later turn and text only;
labels are each answer and its ``<|im_end|>``; no bos; the generation prompt is the training
prefix; truncation never cuts an image; and the ids equal llava-onevision's HF chat template
(with LLaVA-NeXT's system turn) wherever that template and LLaVA-NeXT render alike.
"""

import pytest
from transformers import AddedToken, AutoTokenizer

from sinktrain.data.chat import encode, encode_prompt
from sinktrain.demo import ensure_demo_model

from chat_expect import M, conv, whole

# Written out here rather than imported, so a typo in the module's copy fails the tests.
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
USER = "<|im_start|>user\n"
ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"  # closes the question, opens the answer
END = "<|im_end|>"
IMAGE = "<image>"

# The chat_template of transformers' convert_llava_onevision_weights_to_hf.py, verbatim.
HF_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    """The Qwen2-VL demo's tokenizer plus <image> as one special token (as the HF converter adds it)."""
    t = AutoTokenizer.from_pretrained(ensure_demo_model("qwen2_vl"))
    t.add_tokens(AddedToken(IMAGE, special=True, normalized=False), special_tokens=True)
    return t


@pytest.fixture(scope="module")
def img(tok):
    return tok.convert_tokens_to_ids(IMAGE)


def said(tok, labels):
    return tok.decode([label for label in labels if label != M])


def test_tokenizer_fixture(tok, img):
    assert tok.bos_token is None and tok("What").input_ids == tok("What", add_special_tokens=False).input_ids
    for special in ("<|im_start|>", "<|im_end|>", IMAGE):
        assert len(tok(special).input_ids) == 1
    assert tok(IMAGE * 3 + "\nWhat").input_ids[:3] == [img] * 3


def check_spans(img, ex, slots):
    """Each image span is exactly its slots' image tokens; the "\\n" after it is outside."""
    assert [ex.input_ids[a:b] for a, b in ex.image_spans] == [[img] * n for n in slots]
    assert ex.input_ids.count(img) == sum(slots)


# --- exact rendering --------------------------------------------------------------------------

SINGLE = "\nWhat colour are the objects?"  # after the image, from any position


@pytest.mark.parametrize("question", ["<image>\nWhat colour are the objects?", "What colour are the objects?\n<image>",
                                      "What colour are the objects? <image>", "<image>What colour are the objects?"])
def test_single_image_moves_to_the_front(tok, img, question):
    ex = encode(conv(question, "The objects are red."), tok, "onevision", img, [4])
    ids, labels = whole(tok, SYSTEM + USER + IMAGE * 4 + SINGLE + ASSISTANT, "The objects are red." + END, "\n")
    assert ex.input_ids == ids and ex.labels == labels
    assert said(tok, ex.labels) == "The objects are red.<|im_end|>"
    assert ex.input_ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # no bos
    check_spans(img, ex, [4])
    (_, end), = ex.image_spans
    assert tok.decode(ex.input_ids[end]).startswith("\n")  # the newline is text, after the span


def test_several_images_in_one_turn_stay_where_they_stand(tok, img):
    c = conv("<image>\n<image>\nWhich image has more objects?", "The second.")
    ex = encode(c, tok, "onevision", img, [3, 5])
    ids, labels = whole(tok, SYSTEM + USER + IMAGE * 3 + "\n" + IMAGE * 5 + "\nWhich image has more objects?" + ASSISTANT,
                        "The second." + END, "\n")
    assert ex.input_ids == ids and ex.labels == labels
    check_spans(img, ex, [3, 5])
    interleaved = encode(conv("Compare <image> with <image>.", "The second."), tok, "onevision", img, [2, 3])
    ids, labels = whole(tok, SYSTEM + USER + "Compare " + IMAGE * 2 + " with " + IMAGE * 3 + "." + ASSISTANT, "The second." + END, "\n")
    assert interleaved.input_ids == ids and interleaved.labels == labels
    check_spans(img, interleaved, [2, 3])


LATER_VALUES = ("What colour are the objects?", "Red.", "How many objects are there?\n<image>", "3.",
                "<image>\n<image>\nAnd in these?", " 2 and 5.")
LATER = conv(*LATER_VALUES)
LATER_PARTS = (
    SYSTEM + USER + "What colour are the objects?" + ASSISTANT, "Red." + END,
    "\n" + USER + IMAGE * 4 + "\nHow many objects are there?" + ASSISTANT, "3." + END,
    "\n" + USER + IMAGE * 2 + "\n" + IMAGE * 3 + "\nAnd in these?" + ASSISTANT, " 2 and 5." + END, "\n",
)


def test_multi_turn_with_images_in_later_turns(tok, img):
    ex = encode(LATER, tok, "onevision", img, [4, 2, 3])
    ids, labels = whole(tok, *LATER_PARTS)
    assert ex.input_ids == ids and ex.labels == labels
    assert said(tok, ex.labels) == "Red.<|im_end|>3.<|im_end|> 2 and 5.<|im_end|>"
    assert ex.last_prompt_index == len(tok(LATER_PARTS[0]).input_ids) - 1  # the FIRST answer's start
    check_spans(img, ex, [4, 2, 3])
    assert tok.decode(ex.input_ids[-2:]) == "<|im_end|>\n" and ex.labels[-2:] == [ex.input_ids[-2], M]


def test_text_only(tok, img):
    ex = encode(conv("What colour are the objects?", "The objects are red."), tok, "onevision", img, [])
    ids, labels = whole(tok, SYSTEM + USER + "What colour are the objects?" + ASSISTANT, "The objects are red." + END, "\n")
    assert ex.input_ids == ids and ex.labels == labels and ex.image_spans == []


# --- generation prompts ----------------------------------------------------------------------

PROMPT_CASES = [  # (LLaVA-format questions and answers, slots per image)
    (("<image>\nWhat shape are the objects?", "Circles."), [4]),
    (("<image>\n<image>\nWhich has more objects?", "The first."), [2, 5]),
    (("Describe the image.", "A blue square.", "<image>\n<image>\nAnd these?", " Two red circles."), [2, 3]),
    (LATER_VALUES, [4, 2, 3]),
]


@pytest.mark.parametrize("values, slots", PROMPT_CASES)
def test_generation_prompt_is_the_training_prefix(tok, img, values, slots):
    prompt = encode_prompt(conv(*values[:-1]), tok, "onevision", img, slots)
    assert tok.decode(prompt).endswith("<|im_end|>\n<|im_start|>assistant\n")
    ex = encode(conv(*values), tok, "onevision", img, slots)
    last_answer = len(ex.input_ids) - len(tok(values[-1] + END + "\n").input_ids)
    assert ex.labels[last_answer - 1] == M and ex.labels[last_answer] != M
    assert prompt == ex.input_ids[:last_answer]
    if len(values) == 2:  # one question: its prompt ends at the last prompt token
        assert prompt == ex.input_ids[: ex.last_prompt_index + 1]


# --- truncation ------------------------------------------------------------------------------


def test_truncation_never_cuts_an_image(tok, img):
    slots = [4, 2, 3]
    ex = encode(LATER, tok, "onevision", img, slots)
    last_image_end = ex.image_spans[-1][1]
    assert ex.last_prompt_index + 1 < ex.image_spans[0][0]  # the first answer precedes every image
    for max_length in range(1, len(ex.input_ids)):
        cut = encode(LATER, tok, "onevision", img, slots, max_length)
        if max_length < last_image_end or max_length <= ex.last_prompt_index + 1:
            assert cut is None, max_length
        else:
            assert (cut.input_ids, cut.labels) == (ex.input_ids[:max_length], ex.labels[:max_length])
            check_spans(img, cut, slots)
    assert encode(LATER, tok, "onevision", img, slots, len(ex.input_ids) - 1, "drop") is None


# --- llava-onevision's HF chat template ------------------------------------------------------


def message(role, *content):
    return {"role": role, "content": [{"type": "image"} if c is None else {"type": "text", "text": c} for c in content]}


def hf_ids(tok, messages, slots, generation):
    """The processor's ids: the HF template's text (after LLaVA-NeXT's system turn), each <image> expanded."""
    text = tok.apply_chat_template([message("system", "You are a helpful assistant."), *messages], chat_template=HF_TEMPLATE,
                                   add_generation_prompt=generation, tokenize=False)
    for n in slots:  # LlavaOnevisionProcessor: one image at a time, in order
        text = text.replace(IMAGE, "<|placeholder|>" * n, 1)
    return tok(text.replace("<|placeholder|>", IMAGE)).input_ids


HF_CASES = [  # (LLaVA-format questions and answers, slots per image, the same conversation as messages)
    (("<image>\nWhat shape are the objects?", "Circles."), [4],
     [message("user", None, "What shape are the objects?"), message("assistant", "Circles.")]),
    (("What shape are the objects?\n<image>", "Circles."), [6],  # moved to the front, as the HF template does
     [message("user", "What shape are the objects?", None), message("assistant", "Circles.")]),
    (("What colour are the objects?", "Red."), [],
     [message("user", "What colour are the objects?"), message("assistant", "Red.")]),
    (("Describe the image.", "A blue square.", "<image>\nAnd this one?", " Two red circles."), [3],
     [message("user", "Describe the image."), message("assistant", "A blue square."),
      message("user", None, "And this one?"), message("assistant", " Two red circles.")]),
    (("<image>\n<image>\nWhich has more objects?", "The first."), [2, 5],  # "<image>\n" each, then the text: alike
     [message("user", None, None, "Which has more objects?"), message("assistant", "The first.")]),
]


@pytest.mark.parametrize("values, slots, messages", HF_CASES)
def test_ids_equal_the_hf_chat_template(tok, img, values, slots, messages):
    ex = encode(conv(*values), tok, "onevision", img, slots)
    assert ex.input_ids == hf_ids(tok, messages, slots, generation=False)
    assert said(tok, ex.labels) == "".join(answer + END for answer in values[1::2])
    prompt = encode_prompt(conv(*values[:-1]), tok, "onevision", img, slots)
    assert prompt == hf_ids(tok, messages[:-1], slots, generation=True)
