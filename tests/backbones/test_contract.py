"""The visual-token contract, once per family (tests/backbones/conftest.py: FAMILIES).

Real tiny models with planted sinks (sinktrain.demo), compared with the stock transformers model
on inputs built by transformers' own processor / chat template:

* sinktrain's data path gives exactly the stock input_ids, and each image the stock slot count;
* neutral DualMLP and neutral LSG gates reproduce the stock logits and generate() output (fp32);
* planted V-sinks land in the slots the contract says (ground truth independent of sinktrain);
* with sink-first on, the LLM sees each image's sinks first, each with its own position ids;
* a text-only batch still runs the vision tower and the connector (ZeRO-3);
* under gates, SDPA equals eager, and KV-cache generation equals full recompute.
"""

import dataclasses

import pytest
import torch

from sinktrain.backbones.registry import backbone_class, load_backbone, load_config
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.modeling.connector import DualMLPConnector
from sinktrain.errors import SinkTrainError
from sinktrain.eval.generate import prompt_inputs
from sinktrain.data.eval_set import EvalSample
from sinktrain.lsg.gating import LayerGating
from families import capture_llm_inputs, collate, examples, logits_of, perturb, position_rows, text_only, with_images

ATOL = 1e-5  # fp32 on CPU: neutral paths agree to rounding (the DualMLP projects row subsets)
QUESTION, ANSWER = "What colour are the objects?", "red"


def eval_samples(scenes, n: int) -> list[EvalSample]:
    return [EvalSample(str(i), "colour", [{"from": "human", "value": f"<image>\n{QUESTION}"}], ANSWER, (image,)) for i, (_, image) in enumerate(with_images(scenes, n))]


def stock_batch(family, backbone, scenes, n: int, answer: str | None = None) -> dict:
    """The stock model's inputs for n images, one prompt each, left-padded like generation prompts."""
    rows = [family.stock_inputs(backbone, QUESTION, [image], answer) for _, image in with_images(scenes, n)]
    width = max(r["input_ids"].shape[1] for r in rows)
    batch = {}
    for key in rows[0]:
        if key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            pad = backbone.tokenizer.pad_token_id if key == "input_ids" else 0
            batch[key] = torch.cat([torch.nn.functional.pad(r[key], (width - r[key].shape[1], 0), value=pad) for r in rows])
        else:  # image inputs; per-image crops (LLaVA-OneVision) padded to the most, as its processor pads a batch
            batch[key] = torch.cat(pad_dim_1([r[key] for r in rows]))
    return batch


def pad_dim_1(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    if tensors[0].dim() < 3:
        return tensors
    most = max(t.shape[1] for t in tensors)
    return [torch.cat([t, t.new_zeros(t.shape[0], most - t.shape[1], *t.shape[2:])], dim=1) for t in tensors]


# -- the data path equals the stock inputs ---------------------------------------------------------


def test_prompts_and_slot_counts_equal_the_stock_processors(family, stock, scenes):
    ours = prompt_inputs(stock, eval_samples(scenes, 3), stock.default_template)
    theirs = stock_batch(family, stock, scenes, 3)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    torch.testing.assert_close(ours["pixel_values"], family.stock_pixels(stock, theirs))
    slots = (theirs["input_ids"] == stock.image_token_id).sum(dim=1).tolist()
    assert [stock.image_inputs([image])[1][0] for _, image in with_images(scenes, 3)] == slots


def test_training_example_equals_the_stock_conversation(family, stock, scenes):
    record, image = with_images(scenes, 1)[0]
    conversation = [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": ANSWER}]
    ours = stock.encoder().encode(conversation, [image])
    theirs = family.stock_inputs(stock, QUESTION, [image], ANSWER)["input_ids"][0]
    assert torch.equal(ours["input_ids"], theirs[: len(ours["input_ids"])])
    labelled = stock.tokenizer.decode(ours["labels"][ours["labels"] != -100])
    assert labelled.strip().startswith(ANSWER)


# -- neutral means identical -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dual_mlp", "lsg"])
def test_neutral_method_equals_stock_logits_and_generate(family, model_dir, stock, fresh, scenes, method):
    if method == "dual_mlp":
        attach_dual_mlp(fresh, sink_first=False)
    else:
        LayerGating(fresh, [1, 2], groups=2)
    inputs = stock_batch(family, stock, scenes, 3)
    plain = family_model(model_dir)
    torch.testing.assert_close(logits_of(fresh.model, inputs), logits_of(plain, inputs), atol=ATOL, rtol=0)
    ours = fresh.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours, plain.generate(**inputs, max_new_tokens=6, do_sample=False))


def family_model(model_dir):
    """The stock transformers class from the directory, no sinktrain hook at all."""
    config = load_config(str(model_dir))
    return backbone_class(config).hf_classes[config.model_type].from_pretrained(str(model_dir)).eval()


# -- sinks in slots ------------------------------------------------------------------------------


def test_planted_sinks_land_in_the_contract_slots(family, stock, scenes):
    """Ground truth without sinktrain: the planted neuron's firing (LLaVA: one patch, one slot) or
    the scenes' corner watermark (Qwen: a 16-pixel square, exactly one 2x2-patch slot)."""
    chosen = with_images(scenes, 24)
    batch = collate(stock, chosen)
    with torch.no_grad():
        stock.forward(batch)
    state = stock.slots.state
    certain = 0
    for row in range(len(chosen)):
        found = set(state.v_sinks[row][state.visual[row]].nonzero().flatten().tolist())
        must, may = family.sink_slots(stock, chosen[row][1])
        assert must <= found <= may, (row, found, must, may)
        certain += len(must)
    assert certain >= 6, "the fixture should hold images with clear V-sinks"


def test_sink_first_moves_sinks_with_their_own_positions(family, stock, fresh, scenes):
    chosen = with_images(scenes, 6)
    batch = collate(stock, chosen)
    before, handle = capture_llm_inputs(stock)
    with torch.no_grad():
        stock.forward(batch)
    handle.remove()
    sinks, visual, patch = (mask.clone() for mask in (stock.slots.state.v_sinks, stock.slots.state.visual, stock.slots.state.patch))
    attach_dual_mlp(fresh, sink_first=True)
    after, handle = capture_llm_inputs(fresh)
    with torch.no_grad():
        fresh.forward(batch)
    handle.remove()
    moved = 0
    for row in range(len(chosen)):
        slots = patch[row].nonzero().flatten()  # image content; layout slots (newlines) stay where they are
        order = torch.cat([slots[sinks[row][slots]], slots[~sinks[row][slots]]])
        moved += int((order != slots).any())
        positions_before = position_rows(before[0], row, order)
        positions_after = position_rows(after[0], row, slots)
        assert torch.equal(positions_after, positions_before), row  # each token keeps its own position ids
        assert fresh.slots.state.v_sinks[row][slots].tolist() == sorted(sinks[row][slots].tolist(), reverse=True)
        layout = (visual[row] & ~patch[row]).nonzero().flatten()
        assert torch.equal(position_rows(after[0], row, layout), position_rows(before[0], row, layout))
        assert torch.equal(fresh.slots.state.patch[row], patch[row])
    assert moved >= 2, "the fixture should move some sinks"


# -- DualMLP: both connectors start from the stock one, and both train -------------------------


def test_attach_starts_both_projectors_from_the_stock_one(stock, fresh):
    projector = fresh.connector
    connector = attach_dual_mlp(fresh)
    assert fresh.connector is connector and isinstance(connector, DualMLPConnector)
    assert connector.f_non is projector
    assert connector.f_sink is not projector
    for (name, p_sink), (_, p_stock) in zip(connector.f_sink.named_parameters(), stock.connector.named_parameters()):
        assert torch.equal(p_sink, p_stock), name
    perturb(connector.f_sink)
    for p_non, p_stock in zip(connector.f_non.parameters(), stock.connector.parameters()):
        assert torch.equal(p_non, p_stock)  # f_sink owns its own storage


# -- gradients and freezing --------------------------------------------------------------------


def test_gradients_reach_both_projectors_and_not_the_vit(fresh, scenes):
    fresh.freeze_vision()
    connector = attach_dual_mlp(fresh)
    batch = collate(fresh, with_images(scenes, 2))
    fresh.forward(batch).loss.backward()
    for name, p in connector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    connector_ids = {id(p) for p in connector.parameters()}  # Qwen's merger lives inside the vision tower
    for name, p in fresh.vision_tower.named_parameters():
        if id(p) not in connector_ids:
            assert not p.requires_grad and p.grad is None, name
    assert fresh.model.lm_head.weight.grad is not None


# Trainable after freeze_vision besides the connector, the LLM and lm_head: LLaVA-OneVision's
# image_newline, which its recipes train with the projector.
OTHER_TRAINABLE = {"llava_onevision": {"model.image_newline"}}


def test_freezing_the_vision_leaves_only_connector_llm_and_head(family, fresh):
    fresh.freeze_vision()
    owners = {id(p): name for name, module in [("connector", fresh.connector), ("llm", fresh.language_model), ("head", fresh.model.lm_head)]
              for p in module.parameters()}
    trainable = {name for name, p in fresh.model.named_parameters() if p.requires_grad}
    others = {name for name, p in fresh.model.named_parameters() if p.requires_grad and id(p) not in owners}
    assert others == OTHER_TRAINABLE.get(family.name, set()), others
    assert all(p.requires_grad for module in (fresh.connector, fresh.language_model, fresh.model.lm_head) for p in module.parameters())
    frozen = {id(p) for p in fresh.vision_parameters()}
    assert frozen and not any(p.requires_grad for p in fresh.model.parameters() if id(p) in frozen) and trainable


def test_f_sink_gets_a_gradient_without_sinks(fresh, scenes):
    """ZeRO-3 safety: an empty sink set still runs f_sink and gives it a (zero) gradient."""
    fresh.freeze_vision()
    connector = attach_dual_mlp(fresh)
    fresh.sink_profile = dataclasses.replace(fresh.sink_profile, tau_v=1e9)
    batch = collate(fresh, with_images(scenes, 2))
    fresh.forward(batch).loss.backward()
    assert not fresh.slots.state.v_sinks.any()
    for name, p in connector.f_sink.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() == 0, name
    for name, p in connector.f_non.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_attach_twice_raises(fresh):
    attach_dual_mlp(fresh)
    with pytest.raises(SinkTrainError, match="already has a DualMLP connector"):
        attach_dual_mlp(fresh)



# -- ZeRO-3: every rank runs the same modules ------------------------------------------------------


def test_text_only_batch_runs_vision_and_connector(fresh, scenes):
    fresh.freeze_vision()
    connector = attach_dual_mlp(fresh)
    calls = []
    handles = [m.register_forward_pre_hook(lambda *a: calls.append(1)) for m in (fresh.vision_tower, connector.f_sink, connector.f_non)]
    batch = collate(fresh, text_only(scenes, 2))
    assert not batch.has_image.any() and batch.vision
    fresh.forward(batch).loss.backward()
    for handle in handles:
        handle.remove()
    assert len(calls) >= 3
    for name, p in connector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0, name  # reached, and exactly zero


def test_blank_image_leaves_the_loss_unchanged(fresh, scenes):
    chosen = text_only(scenes, 2)
    batch = collate(fresh, chosen)
    with torch.no_grad():
        loss = fresh.forward(batch).loss
        rows = examples(fresh, chosen)
        alone = [fresh.model(input_ids=r["input_ids"][None], labels=r["labels"][None]).loss for r in rows]
    tokens = [int((r["labels"] != -100).sum()) for r in rows]
    expected = sum(l * n for l, n in zip(alone, tokens)) / sum(tokens)
    torch.testing.assert_close(loss, expected, atol=ATOL, rtol=0)


# -- LSG under gates: attention kernels and the KV cache -----------------------------------------


def non_neutral_gates(backbone, layers):
    gating = LayerGating(backbone, layers, groups=2)
    with torch.no_grad():
        for gate in gating.gates.values():
            torch.nn.init.normal_(gate.out.weight, std=1.0)
    return gating


def test_sdpa_equals_eager_under_gates(family, model_dir, stock, scenes):
    inputs = stock_batch(family, stock, scenes, 3)
    outputs = []
    for attn in ("eager", "sdpa"):
        backbone = load_backbone(str(model_dir), attn_implementation=attn)
        torch.manual_seed(0)
        non_neutral_gates(backbone, [1, 3])
        outputs.append(logits_of(backbone.model, inputs))
    real = inputs["attention_mask"].bool()  # padded query rows are undefined and differ by kernel
    # fp32 rounding of two kernels: up to 1.4e-5 measured on LLaVA-OneVision's longest prompts (~120 positions)
    assert (outputs[0][real] - outputs[1][real]).abs().max() < 3e-5


def test_kv_cache_generation_equals_full_recompute(family, fresh, stock, scenes):
    torch.manual_seed(0)
    non_neutral_gates(fresh, [1, 2])
    inputs = stock_batch(family, stock, scenes, 2)
    cached = fresh.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for _ in range(5):  # greedy by full recompute: the whole sequence every step, no cache
        # The generated tokens as labels: the gates read the prompt's last token, as at generation.
        labels = torch.where(torch.arange(ids.shape[1]) < inputs["input_ids"].shape[1], -100, ids)
        step = {**inputs, "input_ids": ids, "attention_mask": mask, "labels": labels}
        if "mm_token_type_ids" in inputs:
            step["mm_token_type_ids"] = torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, ids.shape[1] - inputs["input_ids"].shape[1]))
        with torch.no_grad():
            logits = fresh.model(**step, use_cache=False).logits
        next_ids = logits[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, next_ids], 1), torch.cat([mask, torch.ones_like(next_ids)], 1)
    assert torch.equal(cached, ids)
    # generate() without a cache re-sends the image tokens every step (the images encoded once)
    assert torch.equal(fresh.model.generate(**inputs, max_new_tokens=5, do_sample=False, use_cache=False), cached)
