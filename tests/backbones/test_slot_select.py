"""DIYSink stage 1's sink-only and non-sink-only inputs on every family (sinktrain.modeling.slot_select,
sinktrain.diysink.pretrain), on caption batches in the family's pretraining format.

The LLM receives exactly the claimed slots (each with its own embedding and position ids) and
nothing of the others: the compacted loss is the loss of a sequence without them (checked against
an unbatched forward of the kept tokens alone), the other projector's weights cannot change it,
and each projector only ever runs on its own tokens. Keeping every slot is the stock loss. With
both projectors training, each one's gradient is exactly the one its own pass gives.
"""

import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sinktrain.modeling.slot_select import SELECTIONS, compacted_lm_loss
from sinktrain.data.chat.engine import IGNORE_INDEX
from sinktrain.data.scenes import caption_samples
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.pretrain import SeparatePretraining, make_trainable, selecting

from families import perturb, position_rows


@pytest.fixture(scope="module")
def captions(family, stock):
    """Six caption samples, collated in the family's pretraining format."""
    pairs = [(record, Image.open(io.BytesIO(png)).convert("RGB")) for record, png in caption_samples(6, seed=5)]
    encoder = stock.encoder(stock.pretraining_template())
    rows = [dict(encoder.encode(record["conversations"], [image]), lane=0, index=0, bad=0) for record, image in family.scenes(pairs)]
    batch, _ = stock.collator()(rows)
    return batch


def llm_inputs(backbone, batch, part=None) -> tuple[dict, torch.Tensor]:
    """What the language model receives (after sinktrain's hooks), and the loss; ``part`` selects slots."""
    store = {}

    def record(module, args, kwargs):
        store.update({k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

    handle = backbone.language_model.register_forward_pre_hook(record, with_kwargs=True)
    with torch.no_grad():
        if part is None:
            loss = backbone.forward(batch).loss
        else:
            loss = SeparatePretraining(backbone, (part,)).part_loss(batch, part)
    handle.remove()
    return store, loss


def kept_columns(state, part: str) -> list[torch.Tensor]:
    keep = SELECTIONS[part](state)
    return [keep[row].nonzero().flatten() for row in range(keep.shape[0])]


@pytest.mark.parametrize("part", ["sink", "non"])
def test_the_llm_receives_exactly_the_selected_slots(stock, captions, part):
    full, _ = llm_inputs(stock, captions)
    state = stock.slots.state
    sinks = state.patch & state.sink_mask()
    assert sinks.any(dim=1).sum() >= 3, "the fixture should have V-sinks in most images"
    compact, _ = llm_inputs(stock, captions, part)
    for row, kept in enumerate(kept_columns(state, part)):
        visual = kept[state.visual[row, kept]]
        expected = sinks[row] if part == "sink" else state.patch[row] & ~sinks[row]
        assert torch.equal(visual, expected.nonzero().flatten())
        n = len(kept)
        assert torch.equal(compact["inputs_embeds"][row, :n], full["inputs_embeds"][row, kept])
        assert torch.equal(position_rows(compact, row, torch.arange(n)), position_rows(full, row, kept))
        assert torch.equal(compact["attention_mask"][row, :n], captions.attention_mask[row, kept])  # the batch's padding stays
        assert not compact["attention_mask"][row, n:].any()


@pytest.mark.parametrize("part", ["sink", "non"])
def test_compacted_loss_is_the_loss_of_the_sequence_without_the_other_slots(stock, captions, part):
    full, _ = llm_inputs(stock, captions)
    _, loss = llm_inputs(stock, captions, part)
    head, total, count = stock.model.get_output_embeddings(), 0.0, 0
    for row, kept in enumerate(kept_columns(stock.slots.state, part)):
        kept = kept[captions.attention_mask[row, kept].bool()]  # the padding of the batch goes too
        positions = full.get("position_ids")
        positions = kept.unsqueeze(0) if positions is None else positions[..., row : row + 1, kept]
        with torch.no_grad():
            hidden = stock.language_model(inputs_embeds=full["inputs_embeds"][row : row + 1, kept], position_ids=positions)
            logits = head(hidden.last_hidden_state)[0, :-1]
        targets = captions.labels[row, kept][1:]
        total += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((targets != IGNORE_INDEX).sum())
    torch.testing.assert_close(loss.item(), total / count, rtol=1e-5, atol=1e-5)


def test_keeping_every_slot_is_the_stock_loss(stock, captions):
    _, stock_loss = llm_inputs(stock, captions)
    stock.slots.selector = lambda state: torch.ones_like(state.visual)
    try:
        with torch.no_grad():
            out = stock.model(**stock.model_inputs(captions.input_ids, captions.attention_mask, captions.vision))
        loss = compacted_lm_loss(out.logits, captions.labels, stock.slots.compaction)
    finally:
        stock.slots.selector = None
    torch.testing.assert_close(loss, stock_loss, rtol=1e-6, atol=1e-6)


def test_each_projector_sees_only_its_tokens_and_the_other_cannot_reach_the_loss(fresh, captions):
    connector = attach_dual_mlp(fresh, sink_first=False)
    seen = {"f_sink": [], "f_non": []}
    for name in seen:
        getattr(connector, name).register_forward_pre_hook(lambda m, args, name=name: seen[name].append(fresh.token_sink_mask(*args)))
    pretraining = SeparatePretraining(fresh, ("sink", "non"))
    with torch.no_grad():
        before = {part: pretraining.part_loss(captions, part) for part in ("sink", "non")}
    assert all(flags.all() for flags in seen["f_sink"]) and not any(flags.any() for flags in seen["f_non"])
    assert sum(len(flags) for flags in seen["f_sink"]) > 0
    perturb(connector.f_non, scale=1.0)
    with torch.no_grad():
        assert torch.equal(pretraining.part_loss(captions, "sink"), before["sink"])
        assert not torch.equal(pretraining.part_loss(captions, "non"), before["non"])
    perturb(connector.f_sink, scale=1.0)
    with torch.no_grad():
        assert not torch.equal(pretraining.part_loss(captions, "sink"), before["sink"])


def gradients(backbone, connector, parts, batch) -> dict[str, torch.Tensor]:
    make_trainable(backbone, connector, parts)
    backbone.model.zero_grad(set_to_none=True)
    SeparatePretraining(backbone, parts)(batch).backward()
    return {name: p.grad.clone() for name, p in backbone.model.named_parameters() if p.grad is not None}


def test_training_both_gives_each_projector_its_own_gradient(fresh, captions):
    connector = attach_dual_mlp(fresh, sink_first=False)
    perturb(connector.f_sink, seed=1)  # two different projectors, as after some training
    both = gradients(fresh, connector, ("sink", "non"), captions)
    alone = {**gradients(fresh, connector, ("sink",), captions), **gradients(fresh, connector, ("non",), captions)}
    assert set(both) == set(alone) == {n for n, _ in fresh.model.named_parameters() if ".f_sink." in n or ".f_non." in n}
    for name, grad in both.items():
        assert torch.equal(grad, alone[name]), name
    with selecting(fresh, "sink"):  # the selection ends with its block
        pass
    assert fresh.slots.selector is None
