"""Tests for sinktrain.data.templates with a real (tiny) sentencepiece Llama tokenizer.

Expected ids are composed by hand from ``enc`` of the pieces, and decoded strings are checked too,
so a segmentation mistake cannot hide behind the code under test. Run:
    python -m pytest tests/data/test_templates.py -q
"""

import pytest
import sentencepiece as spm
from transformers import LlamaTokenizer

from sinktrain.data.templates import TEMPLATES, Template, build_example, build_prompt
from sinktrain.errors import SinkTrainError

# Written out here rather than imported, so a typo in the module's copy fails the tests.
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
N_IMG = 3  # a real LLaVA-1.5 uses 576; 3 keeps the expected lists readable
M = -100


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
    """Sentencepiece BPE like Llama's (byte fallback, bos=1, eos=2, unk=0) plus <image> and <pad>."""
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
        remove_extra_whitespaces=False,  # as in Llama's tokenizer.model
        character_coverage=1.0, minloglevel=2,
    )
    t = LlamaTokenizer.from_pretrained(str(d))
    t.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    return t


@pytest.fixture(scope="session")
def img(tok):
    return tok.convert_tokens_to_ids("<image>")


def enc(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def squash(text):
    """Compare decoded text modulo whitespace (sentencepiece decoding adds/drops spaces at joins)."""
    return "".join(text.split())


def label_text(tok, ex):
    return tok.decode([x for x in ex.labels if x != M])


def conv(*values):
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


def assert_aligned(ex):
    assert len(ex.input_ids) == len(ex.labels)
    assert all(lab in (M, i) for i, lab in zip(ex.input_ids, ex.labels))


def test_tokenizer_fixture_is_llama_like(tok, img):
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert img >= 400 and tok.pad_token_id >= 400 and img != tok.pad_token_id
    assert enc(tok, "<image>") == [img]  # registered as one special token
    assert tok.convert_ids_to_tokens(enc(tok, "a"))[0].startswith("▁")  # dummy prefix


def test_v1_single_turn_with_image(tok, img):
    ex = build_example(conv("What is in the image?\n<image>", "A red cube."), tok, "v1", img, N_IMG, None)
    prompt = [1] + enc(tok, SYSTEM + " USER: ") + [img] * N_IMG + enc(tok, "\nWhat is in the image? ASSISTANT:")
    answer = enc(tok, "A red cube.") + [2]
    assert ex.input_ids == prompt + answer
    assert ex.labels == [M] * len(prompt) + answer
    assert ex.last_prompt_index == len(prompt) - 1
    assert ex.num_image_tokens == N_IMG
    assert squash(tok.decode(ex.input_ids)) == squash(
        "<s>" + SYSTEM + " USER: " + "<image>" * N_IMG + "\nWhat is in the image? ASSISTANT: A red cube.</s>"
    )
    assert squash(tok.decode(ex.input_ids[: ex.last_prompt_index + 1])).endswith("ASSISTANT:")
    assert squash(label_text(tok, ex)) == squash("A red cube.</s>")


@pytest.mark.parametrize("question", ["<image>\nWhat is it?", "What is it?\n<image>", "What is it? <image>"])
def test_image_placeholder_moves_to_front(tok, img, question):
    ex = build_example(conv(question, "A cube."), tok, "v1", img, N_IMG, None)
    ref = build_example(conv("<image>\nWhat is it?", "A cube."), tok, "v1", img, N_IMG, None)
    assert ex == ref


def test_v1_text_only_matches_whole_string_tokenization(tok, img):
    ex = build_example(conv("What colour is the car?", "The car is red."), tok, "v1", img, 0, None)
    prompt = [1] + enc(tok, SYSTEM + " USER: What colour is the car? ASSISTANT:")
    assert ex.input_ids == prompt + enc(tok, "The car is red.") + [2]
    # The segment split adds no token boundary that whole-string tokenization would not have.
    assert ex.input_ids == [1] + enc(tok, SYSTEM + " USER: What colour is the car? ASSISTANT: The car is red.") + [2]
    assert ex.last_prompt_index == len(prompt) - 1
    assert ex.num_image_tokens == 0 and img not in ex.input_ids
    assert squash(label_text(tok, ex)) == squash("The car is red.</s>")


def test_v1_multi_turn(tok, img):
    c = conv("<image>\nWhat is in the image?", "A red cube.", "How many cats?", "Two cats.")
    ex = build_example(c, tok, "v1", img, N_IMG, None)
    p1 = [1] + enc(tok, SYSTEM + " USER: ") + [img] * N_IMG + enc(tok, "\nWhat is in the image? ASSISTANT:")
    a1 = enc(tok, "A red cube.") + [2]
    p2 = enc(tok, "USER: How many cats? ASSISTANT:")
    a2 = enc(tok, "Two cats.") + [2]
    assert ex.input_ids == p1 + a1 + p2 + a2
    assert ex.labels == [M] * len(p1) + a1 + [M] * len(p2) + a2
    assert ex.last_prompt_index == len(p1) - 1  # the FIRST prompt, not the last
    assert squash(label_text(tok, ex)) == squash("A red cube.</s>Two cats.</s>")
    assert squash(tok.decode(ex.input_ids)) == squash(
        "<s>" + SYSTEM + " USER: " + "<image>" * N_IMG
        + "\nWhat is in the image? ASSISTANT: A red cube.</s>USER: How many cats? ASSISTANT: Two cats.</s>"
    )


def test_plain_caption(tok, img):
    ex = build_example(conv("<image>\nDescribe the image briefly.", "a dog on the grass"), tok, "plain", img, N_IMG, None)
    caption = enc(tok, "a dog on the grass\n")
    assert caption[-1] == tok.convert_tokens_to_ids("<0x0A>")
    assert ex.input_ids == [1] + [img] * N_IMG + caption  # no </s>: LLaVA's preprocess_plain
    assert ex.labels == [M] * (1 + N_IMG) + caption
    assert ex.last_prompt_index == N_IMG
    assert label_text(tok, ex) == "a dog on the grass\n"
    assert build_prompt(conv("<image>\nDescribe."), tok, "plain", img, N_IMG) == [1] + [img] * N_IMG


def test_build_prompt_is_the_training_prefix(tok, img):
    c = conv("<image>\nWhat is in the image?", "A red cube.")
    ex = build_example(c, tok, "v1", img, N_IMG, None)
    prompt = build_prompt(c[:1], tok, "v1", img, N_IMG)
    assert prompt == ex.input_ids[: ex.last_prompt_index + 1]
    assert squash(tok.decode(prompt)) == squash("<s>" + SYSTEM + " USER: " + "<image>" * N_IMG + "\nWhat is in the image? ASSISTANT:")


def test_build_prompt_multi_turn(tok, img):
    c = conv("What is in the image?", "A red cube.", "How many cats?", "Two cats.")
    ex = build_example(c, tok, "v1", img, 0, None)
    prompt = build_prompt(c[:3], tok, "v1", img, 0)
    assert prompt == ex.input_ids[: len(ex.input_ids) - len(enc(tok, "Two cats.")) - 1]
    assert squash(tok.decode(prompt)).endswith(squash("A red cube.</s>USER: How many cats? ASSISTANT:"))


# --- overflow --------------------------------------------------------------------------------


@pytest.fixture
def full(tok, img):
    c = conv("<image>\nWhat is in the image?", "A red cube.", "How many cats?", "Two cats.")
    return c, build_example(c, tok, "v1", img, N_IMG, None)


def test_truncate_cuts_ids_and_labels_together(tok, img, full):
    c, ex = full
    for max_length in (len(ex.input_ids) - 1, len(ex.input_ids) - 7, ex.last_prompt_index + 2):
        cut = build_example(c, tok, "v1", img, N_IMG, max_length, "truncate")
        assert cut.input_ids == ex.input_ids[:max_length]
        assert cut.labels == ex.labels[:max_length]
        assert cut.last_prompt_index == ex.last_prompt_index
        assert_aligned(cut)
    shortest = build_example(c, tok, "v1", img, N_IMG, ex.last_prompt_index + 2)
    assert [x for x in shortest.labels if x != M] == enc(tok, "A red cube.")[:1]


def test_no_overflow_is_untouched(tok, img, full):
    c, ex = full
    assert build_example(c, tok, "v1", img, N_IMG, len(ex.input_ids), "drop") == ex
    assert build_example(c, tok, "v1", img, N_IMG, len(ex.input_ids), "truncate") == ex


def test_truncate_drops_when_cut_hits_first_prompt_or_image(tok, img, full):
    c, ex = full
    image_start = ex.input_ids.index(img)
    for max_length in (ex.last_prompt_index + 1, ex.last_prompt_index, image_start + 1, image_start + N_IMG, 1):
        assert build_example(c, tok, "v1", img, N_IMG, max_length, "truncate") is None


def test_drop_policy(tok, img, full):
    c, ex = full
    assert build_example(c, tok, "v1", img, N_IMG, len(ex.input_ids) - 1, "drop") is None


# --- errors ----------------------------------------------------------------------------------


def raises(match):
    return pytest.raises(SinkTrainError, match=match)


@pytest.mark.parametrize(
    "values_roles, match",
    [
        ([("gpt", "hi"), ("human", "q")], r"turn 0 is from 'gpt' but 'human' was expected"),
        ([("human", "q"), ("human", "q2")], r"turn 1 is from 'human' but 'gpt' was expected"),
        ([("human", "q"), ("gpt", "a"), ("human", "q2")], r"must end with a gpt answer"),
        ([], r"empty"),
    ],
)
def test_role_errors(tok, img, values_roles, match):
    c = [{"from": r, "value": v} for r, v in values_roles]
    with raises(match + r".*Fix:"):
        build_example(c, tok, "v1", img, 0, None)


def test_prompt_must_end_with_question(tok, img):
    with raises(r"must end with a human question.*Fix:"):
        build_prompt(conv("q", "a"), tok, "v1", img, 0)


def test_unknown_template_lists_known(tok, img):
    with raises(r"Unknown conversation template 'vicuna'.*Fix: use one of: plain, v1"):
        build_example(conv("q", "a"), tok, "vicuna", img, 0, None)


@pytest.mark.parametrize(
    "values, n_img, match",
    [
        (("<image>\n<image>\nq", "a"), N_IMG, r"appears 2 times.*Fix:"),
        (("<image>\nq", "a <image>"), N_IMG, r"appears 2 times.*Fix:"),
        (("q", "a <image>"), N_IMG, r"appears in turn 1, but only the first human turn.*Fix:"),
        (("q", "a", "<image>\nq2", "a2"), N_IMG, r"appears in turn 2.*Fix:"),
        (("q", "a"), N_IMG, r"num_image_tokens is 3 but the conversation has no <image>.*Fix:"),
        (("<image>\nq", "a"), 0, r"has <image> but num_image_tokens is 0.*Fix:"),
    ],
)
def test_image_errors(tok, img, values, n_img, match):
    with raises(match):
        build_example(conv(*values), tok, "v1", img, n_img, None)


def test_plain_refuses_multi_turn_and_text_only(tok, img):
    with raises(r"'plain' takes a single question/answer pair.*2 questions.*Fix:"):
        build_example(conv("<image>\nq", "a", "q2", "a2"), tok, "plain", img, N_IMG, None)
    with raises(r"'plain' needs an image.*Fix:"):
        build_example(conv("q", "a"), tok, "plain", img, 0, None)


def test_argument_errors(tok, img):
    with raises(r"on_overflow is 'cut'.*Fix: use one of: truncate, drop"):
        build_example(conv("q", "a"), tok, "v1", img, 0, 10, "cut")
    with raises(r"max_length is 0.*Fix:"):
        build_example(conv("q", "a"), tok, "v1", img, 0, 0)
    with raises(r"image_token_id 99999 is outside.*Fix:"):
        build_example(conv("q", "a"), tok, "v1", 99999, 0, None)


def test_new_template_is_one_entry(tok, img, monkeypatch):
    from sinktrain.data.templates import Segment

    def render(turns):
        (q, a), = turns
        return [Segment("text", q + " ->")] + ([Segment("text", a, True), Segment("eos", is_target=True)] if a else [])

    monkeypatch.setitem(TEMPLATES, "arrow", Template("arrow", render, single_turn=True, requires_image=False))
    ex = build_example(conv("q", "a"), tok, "arrow", img, 0, None)
    assert ex.input_ids == [1] + enc(tok, "q ->") + enc(tok, "a") + [2]
