"""sinktrain.data.chat's ``deepseek`` format (DeepSeek-VL's) with the tiny DeepSeek-VL's tokenizer.

Shown: exact ids and labels (bos, the system prompt, "User: " / "Assistant:" turns, images where
their marker stands, the question stripped at its ends, each answer and its eos as targets, the
space after "Assistant:" with the answer), several images and images in later turns, text only;
a generation prompt is the training prefix; and the ids equal DeepSeek-VL's HF chat template (the
official one, and the demo processor's own) run through the tokenizer, the last answer's eos aside.
"""

import pytest

from sinktrain.data.chat import encode, encode_prompt
from sinktrain.demo import ensure_demo_model
from sinktrain.backbones.processor import load_processor

from chat_expect import M, conv, whole

# Written out here rather than imported, so a typo in the module's copy fails the tests.
SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.\n\n"
)
IMAGE = "<image_placeholder>"
END = "</s>"

# The chat template of deepseek-community/deepseek-vl-*-chat (transformers' processor tests carry
# it), verbatim but for the eos, which this tokenizer spells </s>.
HF_TEMPLATE = (
    "{% set seps = ['\n\n', '</s>'] %}{% set i = 0 %}You are a helpful language and vision assistant. You are able to "
    "understand the visual content that the user provides, and assist the user with a variety of tasks using natural "
    "language.\n\n{% for message in messages %}{% if message['role']|lower == 'user' %}User: {% elif message['role']|lower "
    "== 'assistant' %}Assistant:{% if not (loop.last and not add_generation_prompt and message['content'][0]['type']=='text' "
    "and message['content'][0]['text']=='') %} {% endif %}{% else %}{{ message['role'].capitalize() }}: {% endif %}{% for "
    "content in message['content'] %}{% if content['type'] == 'image' %}<image_placeholder>{% elif content['type'] == 'text' "
    "%}{% set text = content['text'] %}{% if loop.first %}{% set text = text.lstrip() %}{% endif %}{% if loop.last %}{% set "
    "text = text.rstrip() %}{% endif %}{% if not loop.first and message['content'][loop.index0-1]['type'] == 'text' %}{{ ' ' "
    "+ text }}{% else %}{{ text }}{% endif %}{% endif %}{% endfor %}{% if not loop.last or add_generation_prompt %}{% if "
    "message['role']|lower == 'user' %}{{ seps[0] }}{% else %}{{ seps[1] }}{% endif %}{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}Assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def processor():
    return load_processor(str(ensure_demo_model("deepseek_vl")))


@pytest.fixture(scope="module")
def tok(processor):
    return processor.tokenizer


@pytest.fixture(scope="module")
def img(tok):
    return tok.convert_tokens_to_ids(IMAGE)


def said(tok, labels):
    return tok.decode([label for label in labels if label != M])


def test_tokenizer_fixture(tok, img):
    assert tok("What").input_ids[0] == tok.bos_token_id and tok.eos_token == END
    assert tok(IMAGE * 3, add_special_tokens=False).input_ids == [img] * 3 and tok.image_token == IMAGE


@pytest.mark.parametrize("question", ["<image>\nWhat colour are the objects?", "<image>What colour are the objects?",
                                      "<image>\nWhat colour are the objects?\n"])
def test_single_image(tok, img, question):
    ex = encode(conv(question, "The objects are red."), tok, "deepseek", img, [4])
    ids, labels = whole(tok, SYSTEM + "User: " + IMAGE * 4 + "What colour are the objects?\n\nAssistant:", " The objects are red." + END)
    assert ex.input_ids == ids and ex.labels == labels
    assert ex.input_ids[0] == tok.bos_token_id and said(tok, ex.labels) == "The objects are red.</s>"
    assert [ex.input_ids[a:b] for a, b in ex.image_spans] == [[img] * 4]


def test_images_stay_where_they_stand_in_any_turn(tok, img):
    values = ("Compare <image> with <image>.", "The second.", "And <image>\nthis one?", "Three.")
    ex = encode(conv(*values), tok, "deepseek", img, [2, 3, 4])
    ids, labels = whole(tok, SYSTEM + "User: Compare " + IMAGE * 2 + " with " + IMAGE * 3 + ".\n\nAssistant:", " The second." + END,
                        "User: And " + IMAGE * 4 + "this one?\n\nAssistant:", " Three." + END)
    assert ex.input_ids == ids and ex.labels == labels
    assert said(tok, ex.labels) == "The second.</s> Three.</s>"
    assert [b - a for a, b in ex.image_spans] == [2, 3, 4]


def test_text_only(tok, img):
    ex = encode(conv("What colour are the objects?", "Red."), tok, "deepseek", img, [])
    ids, labels = whole(tok, SYSTEM + "User: What colour are the objects?\n\nAssistant:", " Red." + END)
    assert ex.input_ids == ids and ex.labels == labels and ex.image_spans == []


PROMPT_CASES = [
    (("<image>\nWhat shape are the objects?", "Circles."), [4]),
    (("Describe the image.", "A blue square.", "<image>\n<image>\nAnd these?", "Two red circles."), [2, 3]),
]


@pytest.mark.parametrize("values, slots", PROMPT_CASES)
def test_generation_prompt_is_the_training_prefix(tok, img, values, slots):
    prompt = encode_prompt(conv(*values[:-1]), tok, "deepseek", img, slots)
    assert tok.decode(prompt).endswith("\n\nAssistant:")
    ex = encode(conv(*values), tok, "deepseek", img, slots)
    assert prompt == ex.input_ids[: len(prompt)] and ex.labels[len(prompt) - 1] == M and ex.labels[len(prompt)] != M


# --- DeepSeek-VL's HF chat template ---------------------------------------------------------------


def message(role, *content):
    return {"role": role, "content": [{"type": "image"} if c is None else {"type": "text", "text": c} for c in content]}


HF_CASES = [  # (LLaVA-format questions and answers, slots per image, the same conversation as messages)
    (("<image>\nWhat shape are the objects?", "Circles."), [4],
     [message("user", None, "What shape are the objects?"), message("assistant", "Circles.")]),
    (("What colour are the objects?", "Red."), [], [message("user", "What colour are the objects?"), message("assistant", "Red.")]),
    (("Compare <image> with <image>.", "The second."), [2, 3],
     [message("user", "Compare ", None, " with ", None, "."), message("assistant", "The second.")]),
    (("Describe the image.", "A blue square.", "<image>And this one?", "Two red circles."), [3],
     [message("user", "Describe the image."), message("assistant", "A blue square."),
      message("user", None, "And this one?"), message("assistant", "Two red circles.")]),
]


def hf_ids(processor, messages, slots, generation, template):
    """The processor's ids: the template's text, each placeholder expanded to its image's slots."""
    text = processor.tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=generation, tokenize=False)
    for n in slots:
        text = text.replace(IMAGE, "<|placeholder|>" * n, 1)
    return processor.tokenizer(text.replace("<|placeholder|>", IMAGE)).input_ids


@pytest.mark.parametrize("template", ["official", "demo"])
@pytest.mark.parametrize("values, slots, messages", HF_CASES)
def test_ids_equal_the_hf_chat_template(processor, tok, img, values, slots, messages, template):
    chat_template = HF_TEMPLATE if template == "official" else processor.chat_template
    ex = encode(conv(*values), tok, "deepseek", img, slots)
    assert ex.input_ids == hf_ids(processor, messages, slots, False, chat_template) + [tok.eos_token_id]
    prompt = encode_prompt(conv(*values[:-1]), tok, "deepseek", img, slots)
    assert prompt == hf_ids(processor, messages[:-1], slots, True, chat_template)
