"""sinktrain.data.chat with LLaVA-1.5's ``v1`` and ``plain`` formats and a real tiny LLaMA-style tokenizer.

Shown: the ids are the tokenizer's own tokenization of the whole rendered text (bos from the
tokenizer, as LLaVA's processor tokenizes a prompt), labels are exactly the answer spans (spelled
back from the label tokens), an answer or caption starting with a space keeps that space's token,
a generation prompt is the training prefix, the truncation rules, and the errors (each with a Fix).
"""

from contextlib import contextmanager

import pytest
import sentencepiece as spm
from transformers import LlamaTokenizer

from sinktrain.data.chat import encode, encode_prompt
from sinktrain.errors import SinkTrainError

from chat_expect import M, conv, whole

# Written out here rather than imported, so a typo in the module's copy fails the tests.
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
N = 3  # slots per image; a real LLaVA-1.5 uses 576
IMAGE = "<image>" * N


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """Sentencepiece BPE like LLaMA's (byte fallback, unk=0, bos=1, eos=2) plus <image> and <pad>."""
    d = tmp_path_factory.mktemp("tok")
    lines = [
        SYSTEM,
        "USER: What is in the image? ASSISTANT: A red cube on a table.",
        "USER: How many cats are there? ASSISTANT: There are two cats.",
        "a photo of a dog running on the grass",
        "a blue sphere next to a green cylinder",
        "Describe the scene in detail. What colour is the car? The car is red.",
    ]
    (d / "corpus.txt").write_text("\n".join(lines * 20))
    spm.SentencePieceTrainer.train(
        input=str(d / "corpus.txt"), model_prefix=str(d / "tokenizer"), model_type="bpe",
        vocab_size=400, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        remove_extra_whitespaces=False, character_coverage=1.0, minloglevel=2,
    )
    t = LlamaTokenizer.from_pretrained(str(d), add_bos_token=True)  # as LLaMA's: tok(text) starts with <s>
    t.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    return t


@pytest.fixture(scope="module")
def img(tok):
    return tok.convert_tokens_to_ids("<image>")


def spell(tok, ids):
    """The exact text of tokens (sentencepiece decode would drop a leading space)."""
    pieces = tok.convert_ids_to_tokens([i for i in ids if i != M])
    return "".join(pieces).replace("▁", " ").replace("<0x0A>", "\n")


def test_tokenizer_fixture_is_llama_like(tok, img):
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("a").input_ids[0] == 1 and img >= 400 and tok("<image>", add_special_tokens=False).input_ids == [img]
    assert tok.convert_ids_to_tokens(tok("A chat").input_ids)[:2] == ["<s>", "▁A"]  # dummy prefix


def test_v1_single_turn_with_image(tok, img):
    ex = encode(conv("What is in the image?\n<image>", "A red cube."), tok, "v1", img, [N])
    prompt = SYSTEM + " USER: " + IMAGE + "\nWhat is in the image? ASSISTANT:"
    ids, labels = whole(tok, prompt, " A red cube.</s>")
    assert ex.labels == labels and spell(tok, ex.labels) == " A red cube.</s>"  # the space is learnt
    assert ex.last_prompt_index == len(tok(prompt).input_ids) - 1
    assert ex.image_spans == [(ids.index(img), ids.index(img) + N)]
    assert ex.input_ids == ids


def test_v1_bos_then_the_system_prompt_as_the_tokenizer_reads_it(tok, img):
    """<s> is the tokenizer's, the text after it keeps its dummy prefix: '▁A chat', as LLaVA's
    tokenizer_image_token and the HF processor produce (not 'A chat' with a literal '<s>' glued on)."""
    ex = encode(conv("What colour is the car?", "Red."), tok, "v1", img, [])
    assert tok.convert_ids_to_tokens(ex.input_ids[:2]) == ["<s>", "▁A"]


@pytest.mark.parametrize(
    "question", ["<image>\nWhat is it?", "What is it?\n<image>", "What is it? <image>", "What is it?<image>", " <image>\nWhat is it? "]
)
def test_v1_image_moves_to_the_front(tok, img, question):
    ex = encode(conv(question, "A cube."), tok, "v1", img, [N])
    assert ex == encode(conv("<image>\nWhat is it?", "A cube."), tok, "v1", img, [N])


def test_v1_image_inside_the_question_leaves_the_text_as_llava_does(tok, img):
    """LLaVA's preprocess_multimodal: remove <image>, strip, put "<image>\\n" in front; the "\\n"
    that followed the image inside the text stays."""
    ex = encode(conv("Look:<image>\nWhat is it?", "A cube."), tok, "v1", img, [N])
    ids, labels = whole(tok, SYSTEM + " USER: " + IMAGE + "\nLook:\nWhat is it? ASSISTANT:", " A cube.</s>")
    assert ex.labels == labels and ex.input_ids == ids


def test_v1_text_only(tok, img):
    ex = encode(conv("What colour is the car?", "The car is red."), tok, "v1", img, [])
    prompt = SYSTEM + " USER: What colour is the car? ASSISTANT:"
    ids, labels = whole(tok, prompt, " The car is red.</s>")
    assert ex.labels == labels and spell(tok, ex.labels) == " The car is red.</s>"
    assert ex.last_prompt_index == len(tok(prompt).input_ids) - 1 and ex.image_spans == []
    assert img not in ex.input_ids and ex.input_ids == ids


def test_v1_multi_turn(tok, img):
    c = conv("<image>\nWhat is in the image?", "A red cube.", "How many cats?", "Two cats.")
    ex = encode(c, tok, "v1", img, [N])
    parts = (SYSTEM + " USER: " + IMAGE + "\nWhat is in the image? ASSISTANT:", " A red cube.</s>",
             "USER: How many cats? ASSISTANT:", " Two cats.</s>")
    ids, labels = whole(tok, *parts)
    assert ex.labels == labels and spell(tok, ex.labels) == " A red cube.</s> Two cats.</s>"
    assert ex.last_prompt_index == len(tok(parts[0]).input_ids) - 1  # the FIRST prompt, not the last
    assert ex.input_ids == ids


def test_plain_caption(tok, img):
    ex = encode(conv("<image>\nDescribe the image briefly.", "a dog on the grass"), tok, "plain", img, [N])
    ids, labels = whole(tok, IMAGE, "a dog on the grass\n")  # the question is dropped, no </s>
    assert ids[: N + 1] == [1] + [img] * N
    assert ex.input_ids == ids and ex.labels == labels
    assert spell(tok, ex.labels) == "a dog on the grass\n"
    assert ex.last_prompt_index == N and ex.image_spans == [(1, 1 + N)]
    assert encode_prompt(conv("<image>\nDescribe."), tok, "plain", img, [N]) == [1] + [img] * N


# --- an answer or caption that starts with a space keeps that space's token ------------------


def test_v1_answer_with_leading_space_keeps_its_space_token(tok, img):
    ex = encode(conv("What colour is the car?", " The car is red."), tok, "v1", img, [])
    prompt = SYSTEM + " USER: What colour is the car? ASSISTANT:"
    ids, labels = whole(tok, prompt, "  The car is red.</s>")  # the format's space + the answer's own
    assert spell(tok, ex.labels) == "  The car is red.</s>" and ex.labels == labels
    plain = encode(conv("What colour is the car?", "The car is red."), tok, "v1", img, [])
    assert len(ex.input_ids) == len(plain.input_ids) + 1  # one more "▁" token
    # Segment-wise tokenization (prompt ids + tokenized answer) cannot see that space: both answers
    # tokenize alike, so the old path lost the "▁" token the whole string has before them.
    answer = tok(" The car is red.", add_special_tokens=False).input_ids
    assert answer == tok("The car is red.", add_special_tokens=False).input_ids
    assert [label for label in ex.labels if label != M] == tok.convert_tokens_to_ids(["▁"]) + answer + [2]
    assert ex.input_ids == ids


def test_plain_caption_with_leading_space_keeps_its_space_token(tok, img):
    ex = encode(conv("<image>", " a dog on the grass"), tok, "plain", img, [N])
    ids, labels = whole(tok, IMAGE, " a dog on the grass\n")
    assert ex.input_ids == ids and ex.labels == labels
    assert spell(tok, ex.labels) == " a dog on the grass\n"
    unspaced = encode(conv("<image>", "a dog on the grass"), tok, "plain", img, [N])
    assert spell(tok, unspaced.labels) == "a dog on the grass\n"  # the two captions stay different
    segment = tok(" a dog on the grass\n", add_special_tokens=False).input_ids  # segment-wise: both alike
    assert segment == tok("a dog on the grass\n", add_special_tokens=False).input_ids


# --- generation prompts ----------------------------------------------------------------------


def test_v1_prompt_is_the_training_prefix(tok, img):
    c = conv("<image>\nWhat is in the image?", "A red cube.")
    ex = encode(c, tok, "v1", img, [N])
    prompt = encode_prompt(c[:1], tok, "v1", img, [N])
    assert prompt == ex.input_ids[: ex.last_prompt_index + 1]
    assert spell(tok, prompt[1:]).endswith("\nWhat is in the image? ASSISTANT:")
    assert prompt == tok(SYSTEM + " USER: " + IMAGE + "\nWhat is in the image? ASSISTANT:").input_ids


def test_v1_multi_turn_prompt_is_the_training_prefix(tok, img):
    c = conv("What is in the image?", "A red cube.", "How many cats?", "Two cats.")
    ex = encode(c, tok, "v1", img, [])
    prompt = encode_prompt(c[:3], tok, "v1", img, [])
    second_answer = len(ex.labels) - len(tok(" Two cats.", add_special_tokens=False).input_ids) - 1
    assert ex.labels[second_answer - 1] == M and ex.labels[second_answer] != M
    assert prompt == ex.input_ids[:second_answer]
    assert spell(tok, prompt).endswith(" A red cube.</s>USER: How many cats? ASSISTANT:")


# --- overflow --------------------------------------------------------------------------------


@pytest.fixture
def full(tok, img):
    c = conv("<image>\nWhat is in the image?", "A red cube.", "How many cats?", "Two cats.")
    return c, encode(c, tok, "v1", img, [N])


def test_truncate_cuts_ids_and_labels_together(tok, img, full):
    c, ex = full
    for max_length in (len(ex.input_ids) - 1, len(ex.input_ids) - 7, ex.last_prompt_index + 2):
        cut = encode(c, tok, "v1", img, [N], max_length, "truncate")
        assert (cut.input_ids, cut.labels) == (ex.input_ids[:max_length], ex.labels[:max_length])
        assert (cut.last_prompt_index, cut.image_spans) == (ex.last_prompt_index, ex.image_spans)
        assert all(label in (M, i) for i, label in zip(cut.input_ids, cut.labels))
    shortest = encode(c, tok, "v1", img, [N], ex.last_prompt_index + 2)
    assert spell(tok, shortest.labels) == " A"


def test_no_overflow_is_untouched(tok, img, full):
    c, ex = full
    assert encode(c, tok, "v1", img, [N], len(ex.input_ids), "drop") == ex
    assert encode(c, tok, "v1", img, [N], len(ex.input_ids), "truncate") == ex


def test_cut_inside_the_image_or_before_the_first_answer_drops(tok, img, full):
    c, ex = full
    (start, end), = ex.image_spans
    for max_length in (ex.last_prompt_index + 1, ex.last_prompt_index, end, end - 1, start + 1, start, 1):
        assert encode(c, tok, "v1", img, [N], max_length, "truncate") is None


def test_drop_policy(tok, img, full):
    c, ex = full
    assert encode(c, tok, "v1", img, [N], len(ex.input_ids) - 1, "drop") is None


# --- errors ----------------------------------------------------------------------------------


@contextmanager
def raises(match):
    """A SinkTrainError matching ``match`` whose message says how to fix it."""
    with pytest.raises(SinkTrainError, match=match) as info:
        yield
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize(
    "turns, match",
    [
        ([("gpt", "hi"), ("human", "q")], r"turn 0 is from 'gpt' but 'human' was expected"),
        ([("human", "q"), ("human", "q2")], r"turn 1 is from 'human' but 'gpt' was expected"),
        ([("human", "q"), ("gpt", "a"), ("human", "q2")], r"must end with a gpt answer"),
        ([("human", "q"), ("gpt", None)], r"turn 1 is not a"),
        ([], r"empty"),
    ],
)
def test_role_errors(tok, img, turns, match):
    with raises(match):
        encode([{"from": r, "value": v} for r, v in turns], tok, "v1", img, [])


def test_prompt_must_end_with_a_question(tok, img):
    with raises(r"must end with a human question"):
        encode_prompt(conv("q", "a"), tok, "v1", img, [])


def test_unknown_template_lists_known(tok, img):
    with raises(r"Unknown conversation template 'vicuna'.*use one of: deepseek, deepseek_plain, onevision, onevision_plain, plain, qwen2_vl, qwen2_vl_plain, v1"):
        encode(conv("q", "a"), tok, "vicuna", img, [])


@pytest.mark.parametrize(
    "values, slots, match",
    [
        (("<image>\n<image>\nq", "a"), [N, N], r"appears 2 times.*'v1'.*at most 1 image"),
        (("<image>\nq", "a", "<image>\nq2", "a2"), [N, N], r"appears 2 times"),
        (("q", "a", "<image>\nq2", "a2"), [N], r"appears in turn 2, but template 'v1' takes it only in the first human turn"),
        (("<image>\nq", "a <image>"), [N], r"appears in turn 1, a gpt answer"),
        (("q", "a"), [N], r"0 <image> marker\(s\) but the sample has 1 image\(s\)"),
        (("<image>\nq", "a"), [], r"1 <image> marker\(s\) but the sample has 0 image\(s\)"),
        (("<image>\n<image>\nq", "a"), [N], r"2 <image> marker\(s\) but the sample has 1 image\(s\)"),
    ],
)
def test_image_errors(tok, img, values, slots, match):
    with raises(match):
        encode(conv(*values), tok, "v1", img, slots)


def test_plain_refuses_multi_turn_and_text_only(tok, img):
    with raises(r"'plain' takes a single question/answer pair.*2 questions"):
        encode(conv("<image>\nq", "a", "q2", "a2"), tok, "plain", img, [N])
    with raises(r"'plain' needs an image"):
        encode(conv("q", "a"), tok, "plain", img, [])


def test_argument_errors(tok, img):
    with raises(r"on_overflow is 'cut'.*use one of: truncate, drop"):
        encode(conv("q", "a"), tok, "v1", img, [], 10, "cut")
    for bad in (0, -5):
        with raises(rf"max_length is {bad}"):
            encode(conv("q", "a"), tok, "v1", img, [], bad)
    with raises(r"image_token_id 99999 is outside"):
        encode(conv("q", "a"), tok, "v1", 99999, [])


def test_qwen_template_does_not_fit_a_llama_tokenizer(tok, img):
    with raises(r"template 'qwen2_vl'.*needs the special token '<\|im_start\|>' as one token.*splits it"):
        encode(conv("<image>\nq", "a"), tok, "qwen2_vl", img, [N])
    with raises(r"template 'qwen2_vl'"):
        encode_prompt(conv("q"), tok, "qwen2_vl", img, [])
