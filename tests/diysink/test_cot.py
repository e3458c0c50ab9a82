"""DIYSink's CoT routing (sinktrain.diysink.cot) with scripted model answers, on a DualMLP model.

Each of the four (image, question) answer combinations routes its sample to the right visual
tokens: the LLM's prefill attends to exactly the V-sink slots, the non-sink slots or all of them,
row by row in one batch, and both projectors still run (every ZeRO-3 rank gathers both). Answers
that match neither option fall back to both token sets and are counted; the prompts come from a
file and the model is asked them with its images.
"""

import json

import pytest
import torch

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.eval_set import EvalSample, read_eval_set
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.cot import DEFAULT_PROMPTS, CotPrompts, CotRouter, match_option
from sinktrain.errors import SinkTrainError
from sinktrain.eval.generate import generate_batch

COMBINATIONS = [("simple", "global", "sink"), ("complex", "local", "non"), ("simple", "local", "both"), ("complex", "global", "both")]


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def dual(request):
    backbone = load_backbone(str(demo.ensure_demo_model(request.param)))
    attach_dual_mlp(backbone)
    backbone.model.eval()
    return backbone


@pytest.fixture(scope="module")
def samples() -> list[EvalSample]:
    return [s for s in read_eval_set(demo.demo_eval_pattern(), limit=40) if s.images][: len(COMBINATIONS)]


def capture_attention_masks(backbone):
    """The attention mask each language-model forward receives (after sinktrain's hooks)."""
    masks = []
    hook = lambda module, args, kwargs: masks.append(kwargs["attention_mask"].clone())  # noqa: E731
    return masks, backbone.language_model.register_forward_pre_hook(hook, with_kwargs=True)


class Script:
    """A stand-in for the model's two routing answers: per sample, by the prompt it is asked."""

    def __init__(self, image_answers, query_answers):
        self.image_answers, self.query_answers, self.asked = image_answers, query_answers, []

    def __call__(self, asked: list[EvalSample]) -> list[str]:
        self.asked.append(asked)
        is_image = "simple or complex" in asked[0].question[0]["value"]
        answers = self.image_answers if is_image else self.query_answers
        return [answers[int(s.key)] for s in asked]


def keyed(samples):
    return [EvalSample(str(i), s.category, s.question, s.answer, s.images) for i, s in enumerate(samples)]


def test_each_answer_pair_selects_its_tokens_and_both_projectors_run(dual, samples):
    samples = keyed(samples)
    script = Script([f"{image}." for image, _, _ in COMBINATIONS], [f"It needs {query} reasoning" for _, query, _ in COMBINATIONS])
    router = CotRouter(dual, ask=script)
    decisions = router.decide(samples)
    assert [d.route for d in decisions] == [route for _, _, route in COMBINATIONS] and router.unmatched == 0
    assert [(d.image, d.query) for d in decisions] == [(image, query) for image, query, _ in COMBINATIONS]
    runs = {"f_sink": 0, "f_non": 0}
    hooks = [getattr(dual.connector, name).register_forward_hook(lambda *a, name=name: runs.__setitem__(name, runs[name] + 1)) for name in runs]
    masks, handle = capture_attention_masks(dual)
    try:
        with router.selecting(decisions):
            generate_batch(dual, samples, dual.check_template(None), max_new_tokens=2)
    finally:
        handle.remove()
        for hook in hooks:
            hook.remove()
    assert runs == {"f_sink": 1, "f_non": 1}
    state = dual.slots.state
    sinks = state.patch & state.sink_mask()
    assert sinks[0].any(), "the sink-only row's image should have V-sinks"
    claimed = {"sink": sinks, "non": state.patch & ~sinks, "both": state.visual}
    attends = masks[0].bool()
    for row, (_, _, route) in enumerate(COMBINATIONS):
        assert torch.equal(attends[row] & state.visual[row], claimed[route][row]), route
        assert attends[row][~state.visual[row]].sum() > 0  # the text stays


def test_the_model_is_asked_both_questions_with_its_images(dual, samples):
    samples = keyed(samples)
    script = Script(["simple"] * 4, ["global"] * 4)
    CotRouter(dual, ask=script).decide(samples)
    image_asked, query_asked = script.asked
    assert [a.images for a in image_asked] == [s.images for s in samples] == [a.images for a in query_asked]
    for asked, sample in zip(query_asked, samples):
        question = sample.question[0]["value"].replace("<image>", "").strip()
        assert question in asked.question[0]["value"] and "global or local" in asked.question[0]["value"]
        assert asked.question[0]["value"].startswith("<image>\n")


def test_unmatched_answers_fall_back_to_both_and_are_counted(dual, samples):
    samples = keyed(samples)
    script = Script(["maybe", "simple and complex", "simple", "complex"], ["local", "local", "neither", "Global."])
    router = CotRouter(dual, ask=script)
    decisions = router.decide(samples)
    assert [d.route for d in decisions] == ["both", "both", "both", "both"]
    assert [d.reason for d in decisions] == ["unmatched", "unmatched", "unmatched", "routed"]
    assert router.unmatched == 3
    text_only = EvalSample("9", "other", [{"from": "human", "value": "Say hi."}], "hi")
    assert router.decide([text_only])[0].reason == "text-only" and router.unmatched == 3  # nothing to route, nothing asked


def test_the_real_model_routes_without_a_script(dual, samples):
    router = CotRouter(dual, max_new_tokens=3)
    decisions = router.decide(samples)
    assert len(decisions) == len(samples) and all(d.route in ("sink", "non", "both") for d in decisions)
    assert router.unmatched == sum(d.reason == "unmatched" for d in decisions)


@pytest.mark.parametrize("answer, label", [("Simple.", "simple"), ("a REAL-WORLD photo", "complex"), ("simplest", None), ("simple, not complex", None), ("", None)])
def test_an_option_matches_by_whole_words(answer, label):
    assert match_option(answer, CotPrompts.load(None).image_options) == label


def test_prompts_from_a_file(tmp_path, dual, samples):
    spec = json.loads(json.dumps(DEFAULT_PROMPTS))
    spec["image"]["question"] = "Drawing or photo?"
    spec["image"]["options"] = {"simple": ["drawing"], "complex": ["photo"]}
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(spec))
    prompts = CotPrompts.load(path)
    assert prompts.to_dict() == spec
    asked = []
    router = CotRouter(dual, prompts, ask=lambda s: asked.append(s) or ["photo" if "Drawing or photo?" in s[0].question[0]["value"] else "local"] * len(s))
    assert [d.route for d in router.decide(samples[:2])] == ["non", "non"]


@pytest.mark.parametrize("change, message", [
    (lambda s: s["query"].update(question="Global or local?"), "must contain {question}"),
    (lambda s: s["image"]["options"].pop("complex"), "options must be exactly"),
    (lambda s: s["query"]["options"].update(local=[]), "at least one non-empty keyword"),
    (lambda s: s.pop("query"), "keys"),
])
def test_bad_prompt_files_are_named(tmp_path, change, message):
    spec = json.loads(json.dumps(DEFAULT_PROMPTS))
    change(spec)
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(SinkTrainError, match=message):
        CotPrompts.load(path)
    path.write_text("{not json")
    with pytest.raises(SinkTrainError, match="cannot read the CoT prompts"):
        CotPrompts.load(path)
