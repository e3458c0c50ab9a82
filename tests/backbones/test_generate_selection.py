"""Generation with visual slots taken away (DIYSink's sink-only / non-sink-only inputs at inference,
CoT routing's hard selection) on every family: sinktrain.modeling.slot_select with ``by_mask``.

The prefill and every decoding step mask out exactly the slots the selection drops (and the
prompt's padding, nothing else), so each kept token sees what it would see in the compacted
sequence training uses: the cached generation gives the same tokens as a generation without a
cache that compacts every forward (the training path), and the same prefill logits.
"""

import pytest
import torch

from sinktrain.modeling.slot_select import SELECTIONS, selecting_slots
from sinktrain.data.eval_set import EvalSample
from sinktrain.errors import SinkTrainError
from sinktrain.eval.generate import prompt_inputs

from families import capture_llm_inputs, with_images

NEW_TOKENS = 4


@pytest.fixture(scope="module")
def prompts(stock, scenes) -> dict:
    """Four left-padded generation prompts with images, as tools/evaluate.py builds them."""
    samples = [
        EvalSample(str(i), record.get("category", "other"), record["conversations"][:1], record["conversations"][1]["value"], (image,))
        for i, (record, image) in enumerate(with_images(scenes, 4))
    ]
    return prompt_inputs(stock, samples, stock.check_template(None))


def generate(backbone, prompts, part, by_mask, use_cache=True):
    tokenizer = backbone.tokenizer
    with selecting_slots(backbone, SELECTIONS[part], by_mask=by_mask), torch.no_grad():
        out = backbone.model.generate(
            **prompts, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=use_cache,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
        )
    return out[:, prompts["input_ids"].shape[1]:]


@pytest.mark.parametrize("part", ["sink", "non"])
def test_every_step_masks_exactly_the_dropped_slots(stock, prompts, part):
    captured, handle = capture_llm_inputs(stock)
    try:
        generate(stock, prompts, part, by_mask=True)
    finally:
        handle.remove()
    state = stock.slots.state
    sinks = state.patch & state.sink_mask()
    assert sinks.any(dim=1).sum() >= 2, "the fixture should have V-sinks in most images"
    claimed = sinks if part == "sink" else state.patch & ~sinks
    expected = prompts["attention_mask"].bool() & (~state.visual | claimed)
    prefill, *steps = captured
    assert torch.equal(prefill["attention_mask"].bool(), expected)
    assert len(steps) == NEW_TOKENS - 1
    for step, mask in enumerate(s["attention_mask"].bool() for s in steps):
        assert torch.equal(mask[:, : state.length], expected) and mask[:, state.length:].all(), step
    assert stock.slots.hidden is None and stock.slots.selector is None  # the block ends the selection


@pytest.mark.parametrize("part", ["sink", "non"])
def test_cached_generation_equals_compacting_every_forward(stock, prompts, part):
    masked = generate(stock, prompts, part, by_mask=True)
    compacted = generate(stock, prompts, part, by_mask=False, use_cache=False)
    assert torch.equal(masked, compacted)
    with torch.no_grad():
        with selecting_slots(stock, SELECTIONS[part], by_mask=True):
            hidden_logits = stock.model(**prompts).logits[:, -1]
        with selecting_slots(stock, SELECTIONS[part]):
            compact_logits = stock.model(**prompts).logits[:, -1]
        stock_logits = stock.model(**prompts).logits[:, -1]
    torch.testing.assert_close(hidden_logits, compact_logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(hidden_logits, stock_logits, atol=1e-3)  # the selection does change the answer


def test_a_removing_selection_refuses_cached_decoding(stock, prompts):
    with pytest.raises(SinkTrainError, match="a KV cache cannot follow"):
        generate(stock, prompts, "sink", by_mask=False, use_cache=True)
    assert stock.slots.selector is None
