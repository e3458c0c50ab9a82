"""Training-free sink-to-front on every family's stock model (sinktrain.diysink.sink_to_front).

What the LLM receives changes only in the order of each image's patch slots (V-sinks first, then
the others, each group in its own order) and their position ids, which move with them; text,
layout slots (OneVision's newlines) and every value stay. With no V-sinks the logits are stock's.
"""

import dataclasses

import pytest
import torch

from sinktrain.backbones.registry import load_backbone
from sinktrain.modeling.diysink import sink_to_front
from sinktrain.errors import SinkTrainError

from families import capture_llm_inputs, collate, logits_of, position_rows, with_images


def llm_inputs(backbone, batch) -> dict:
    captured, handle = capture_llm_inputs(backbone)
    with torch.no_grad():
        backbone.forward(batch)
    handle.remove()
    return captured[0]


def test_only_the_order_of_visual_slots_and_their_positions_change(stock, fresh, scenes):
    chosen = with_images(scenes, 6)
    batch = collate(stock, chosen)
    before = llm_inputs(stock, batch)
    sinks, patch = stock.slots.state.v_sinks.clone(), stock.slots.state.patch.clone()
    sink_to_front(fresh)
    after = llm_inputs(fresh, batch)
    moved = 0
    for row in range(len(chosen)):
        slots = patch[row].nonzero().flatten()
        order = torch.cat([slots[sinks[row][slots]], slots[~sinks[row][slots]]])
        moved += int((order != slots).any())
        others = (~patch[row]).nonzero().flatten()  # text and layout slots
        assert torch.equal(after["inputs_embeds"][row, slots], before["inputs_embeds"][row, order])
        assert torch.equal(after["inputs_embeds"][row, others], before["inputs_embeds"][row, others])
        assert torch.equal(position_rows(after, row, slots), position_rows(before, row, order))
        assert torch.equal(position_rows(after, row, others), position_rows(before, row, others))
    assert moved >= 2, "the fixture should move some sinks"
    with pytest.raises(SinkTrainError, match="already put first"):
        sink_to_front(fresh)


def test_without_v_sinks_it_is_the_stock_model(model_dir, stock, scenes):
    no_sinks = dataclasses.replace(stock.sink_profile, tau_v=float("inf"))
    backbone = load_backbone(str(model_dir), profile=no_sinks)
    sink_to_front(backbone)
    batch = collate(stock, with_images(scenes, 4))
    inputs = stock.model_inputs(batch.input_ids, batch.attention_mask, batch.vision)
    ours = logits_of(backbone.model, inputs)
    assert not backbone.slots.state.v_sinks.any()
    assert torch.equal(ours, logits_of(stock.model, inputs))
