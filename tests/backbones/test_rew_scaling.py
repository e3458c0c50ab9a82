"""DIYSink's ReW on every family (sinktrain.diysink.rew): at initialisation the model is the plain
DualMLP (logits bitwise), the weights scale exactly each row's V-sink slots (w_sink) and other
patch slots (w_non), nothing else, and only the ReW MLP receives gradients."""

import pytest
import torch

from sinktrain import demo
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.rew import ReWeighting
from sinktrain.diysink.sentence import SentenceEncoder

from families import capture_llm_inputs, collate, with_images


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(str(demo.ensure_demo_sentence_encoder()))


def questions(batch) -> list[str]:
    return [f"Question {i}: what colour are the objects?" for i in range(batch.input_ids.shape[0])]


def test_at_initialisation_rew_is_the_plain_dual_mlp(fresh, scenes, encoder):
    attach_dual_mlp(fresh)
    batch = collate(fresh, with_images(scenes, 4))
    with torch.no_grad():
        plain = fresh.forward(batch).logits
        rew = ReWeighting(fresh, encoder)
        assert torch.equal(rew.set_questions(questions(batch)), torch.ones(4, 2))
        assert torch.equal(fresh.forward(batch).logits, plain)


def test_weights_scale_exactly_the_sink_and_other_patch_slots(fresh, scenes, encoder):
    attach_dual_mlp(fresh)
    batch = collate(fresh, with_images(scenes, 3))
    captured, handle = capture_llm_inputs(fresh)
    with torch.no_grad():
        fresh.forward(batch)
        rew = ReWeighting(fresh, encoder)
        rew.weights = torch.tensor([[2.0, 0.5], [0.25, 3.0], [1.0, 1.0]])
        fresh.forward(batch)
    handle.remove()
    before, after = captured[0]["inputs_embeds"], captured[1]["inputs_embeds"]
    state = fresh.slots.state
    sinks, others = state.patch & state.sink_mask(), state.patch & ~state.sink_mask()
    assert sinks.any() and others.any(), "the fixture should have V-sinks to scale"
    for row, (w_sink, w_non) in enumerate(rew.weights.tolist()):
        assert torch.equal(after[row, sinks[row]], before[row, sinks[row]] * w_sink)
        assert torch.equal(after[row, others[row]], before[row, others[row]] * w_non)
        assert torch.equal(after[row, ~state.patch[row]], before[row, ~state.patch[row]])  # text and layout slots


def test_only_the_rew_mlp_receives_gradients(fresh, scenes, encoder):
    attach_dual_mlp(fresh)
    fresh.model.requires_grad_(False)
    rew = ReWeighting(fresh, encoder)
    batch = collate(fresh, with_images(scenes, 4))
    batch.questions = questions(batch)
    rew.loss(batch).backward()
    graded = {name for name, p in fresh.model.named_parameters() if p.grad is not None}
    assert graded == {name for name, _ in fresh.model.named_parameters() if name.startswith("rew.")}
    assert fresh.model.rew.mlp[-1].weight.grad.abs().sum() > 0  # the zero-initialised layer learns first
