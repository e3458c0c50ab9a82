"""LSG invariants on the tiny demo LLaVA: neutral at init, key scaling as the formula says, KV cache.

Prompts and training batches come from the data path (``prompt_inputs``: left-padded generation
prompts in the v1 chat format; ``backbone.encoder()`` + ``collator()``: right-padded training
batches with labels). No preparation call: the gates read where image slots, V-sinks and the last
prompt token are from the backbone's slot state, recorded by the same forward.
"""

import io
import json

import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from sinktrain.backbones.registry import load_backbone
from sinktrain.data.chat import encode
from sinktrain.data.eval_set import EvalSample
from sinktrain.data.scenes import demo_samples
from sinktrain.demo import llava as demo
from sinktrain.errors import SinkTrainError
from sinktrain.eval.generate import prompt_inputs
from sinktrain.modeling.gate import SinkGate
from sinktrain.lsg.gating import LayerGating
from sinktrain.modeling.keys import TEXT, V_SINK, key_scale, visual_groups

from gate_checks import assert_keys_scaled, assert_three_groups, cached_generate_equals_recompute, last_prompt_index

LAYERS = [1, 2]
TEMPLATE = "v1"
QUESTIONS = ("How many circles are there in the image?", "What colour is it?")  # unequal lengths: left padding


def question(text: str, answer: str | None = None) -> list[dict]:
    turns = [{"from": "human", "value": f"<image>\n{text}"}]
    return turns + ([{"from": "gpt", "value": answer}] if answer is not None else [])


def eval_samples(images, texts) -> list[EvalSample]:
    return [EvalSample(f"s{i}", "other", question(text), "", (image,) if image is not None else ()) for i, (image, text) in enumerate(zip(images, texts))]


def plain_images():
    return [Image.new("RGB", (64, 64), (255, 255, 255)), Image.new("RGB", (64, 64), (0, 0, 0))]


@pytest.fixture(scope="module")
def prompt(demo_model_dir):
    """Two left-padded generation prompts (white and black image), as the model's own kwargs."""
    return prompt_inputs(load_backbone(str(demo_model_dir)), eval_samples(plain_images(), QUESTIONS), TEMPLATE)


def gated(demo_model_dir, attn="eager", layers=LAYERS, groups=2):
    backbone = load_backbone(str(demo_model_dir), attn_implementation=attn)
    return backbone, LayerGating(backbone, layers, groups)


def stock_model(demo_model_dir, attn="eager"):
    return LlavaForConditionalGeneration.from_pretrained(str(demo_model_dir), attn_implementation=attn).eval()


def test_prompt_is_left_padded_and_holds_the_images(prompt, demo_model_dir):
    backbone = load_backbone(str(demo_model_dir))
    mask = prompt["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # one row is left-padded
    slots = (prompt["input_ids"] == backbone.image_token_id).sum(1)
    assert slots.tolist() == [backbone.image_inputs.slots_per_image] * 2 and prompt["pixel_values"].shape[0] == 2


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_neutral_at_init_logits_and_generate(demo_model_dir, prompt, attn):
    backbone, gating = gated(demo_model_dir, attn)
    stock = stock_model(demo_model_dir, attn)
    with torch.no_grad():
        ours = backbone.model(**prompt).logits
        theirs = stock(**prompt).logits
    assert torch.equal(ours, theirs)
    length = prompt["input_ids"].shape[1]
    assert last_prompt_index(backbone) == [length - 1] * 2  # left-padded prompts end at their last prompt token
    assert gating.last_ratios[1].eq(0.5).all()
    ours_gen = backbone.model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours_gen, stock.generate(**prompt, max_new_tokens=6, do_sample=False))
    assert last_prompt_index(backbone) == [length - 1] * 2  # decoding steps keep the prefill's state


def test_gate_parameter_count_matches_paper():
    count = sum(p.numel() for p in SinkGate(4096, 2).parameters())
    assert abs(count - 262_000) / 262_000 < 0.05  # paper: ~262K per layer
    assert abs(5 * count - 1.3e6) / 1.3e6 < 0.05  # paper: 5 layers, 1.3M


def test_key_scale_is_pure_and_text_keeps_one():
    visual = torch.tensor([[False, True, True, True, False]])
    v_sinks = torch.tensor([[False, True, False, False, False]])
    groups = visual_groups(visual, v_sinks)
    assert groups.tolist() == [[TEXT, V_SINK, 1, 1, TEXT]]
    assert key_scale(groups, torch.tensor([[0.4, 1.6]]))[0].tolist() == pytest.approx([1.0, 0.4, 1.6, 1.6, 1.0])


def attention_logits(model, inputs, layer):
    """Pre-softmax attention logits (B, H, T, T) at `layer`: post-RoPE q.k / sqrt(d) from the
    captured q_proj / k_proj outputs, with the model's own rotary embedding."""
    captured = {}
    attn = model.model.language_model.layers[layer].self_attn

    def grab(name):
        return lambda module, args, output: captured.__setitem__(name, output.detach())

    handles = [attn.q_proj.register_forward_hook(grab("q")), attn.k_proj.register_forward_hook(grab("k"))]
    with torch.no_grad():
        weights = model(**inputs, output_attentions=True).attentions[layer]
    for handle in handles:
        handle.remove()
    batch, length, _ = captured["q"].shape
    q, k = (captured[n].view(batch, length, -1, attn.head_dim).transpose(1, 2) for n in ("q", "k"))
    cos, sin = model.model.language_model.rotary_emb(q, torch.arange(length).unsqueeze(0))
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q @ k.transpose(-1, -2) * attn.scaling, weights


def test_key_scaling_matches_the_formula(demo_model_dir, prompt):
    """Pre-softmax logits to V-sink keys are exactly c_sink x stock, to text keys unchanged."""
    backbone, gating = gated(demo_model_dir, layers=[2])
    c_sink, c_rest = 0.4, 1.6
    gating.fixed[2] = torch.tensor([c_sink, c_rest])
    ours, our_weights = attention_logits(backbone.model, prompt, 2)
    theirs, _ = attention_logits(stock_model(demo_model_dir), prompt, 2)
    state = backbone.slots.state
    assert torch.equal(state.visual, prompt["input_ids"] == backbone.image_token_id)
    assert_keys_scaled(ours, theirs, our_weights, state, prompt["attention_mask"], c_sink, c_rest)


def test_generate_with_cache_equals_full_recompute(demo_model_dir, prompt):
    backbone, gating = gated(demo_model_dir, layers=[1, 2])
    cached_generate_equals_recompute(backbone, gating, prompt, {"pixel_values": prompt["pixel_values"]})


def test_bad_layers_and_groups(demo_model_dir, tmp_path):
    backbone = load_backbone(str(demo_model_dir))
    with pytest.raises(SinkTrainError, match=r"out of range: this LLM has 4 decoder layers \(0..3\)"):
        LayerGating(backbone, [7])
    with pytest.raises(SinkTrainError, match="--groups 4"):
        LayerGating(backbone, [1], groups=4)
    profile = json.loads((demo_model_dir / "sink_profile.json").read_text())
    (tmp_path / "no_llm.json").write_text(json.dumps({**profile, "llm_dims": [], "tau_l": None}))
    without_llm_dims = load_backbone(str(demo_model_dir), sink_profile=str(tmp_path / "no_llm.json"))
    with pytest.raises(SinkTrainError, match="--groups 3 needs LLM sink dims"):
        LayerGating(without_llm_dims, [1], groups=3)


# The planted neuron writes silu(g) * g into the L-sink dims: 200-500 where it fires. In chat
# prompts one slot of these 40 scenes gets g = 0.2 (writes 0.02): positive, but no L-sink.
WRITES = 1.0


def planted_l_sinks(backbone, inputs):
    """Ground truth: where the planted LLM neuron writes into the L-sink dims (every position),
    read on the input of layer L_SINK_LAYER's down_proj; and the hidden states."""
    captured = {}
    mlp = backbone.decoder_layers()[demo.L_SINK_LAYER].mlp
    hook = mlp.down_proj.register_forward_pre_hook(lambda m, args: captured.__setitem__("w", args[0][..., demo.LLM_NEURON]))
    with torch.no_grad():
        hidden = backbone.model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    return captured["w"] > WRITES, hidden


def test_three_groups_find_exactly_the_planted_l_sinks(demo_model_dir):
    backbone, gating = gated(demo_model_dir, layers=[2, 3], groups=3)
    images = [Image.open(io.BytesIO(png)) for _, png in demo_samples(40, seed=5) if png]
    inputs = prompt_inputs(backbone, eval_samples(images, ["What is it?"] * len(images)), TEMPLATE)
    fired, hidden = planted_l_sinks(backbone, inputs)
    state = backbone.slots.state
    assert state.v_sinks.sum(1).ge(1).all()  # every image has V-sinks
    truth = fired & state.patch & ~state.v_sinks
    assert truth.sum(1).float().mean() >= 1.0  # the fixture has L-sinks to find
    assert_three_groups(backbone, gating, hidden, truth, (2, 3))  # L-sinks exist from layer 2 on, as in LLaMA-2


def training_batch(backbone, image, answers: tuple[str, str]):
    """A right-padded training batch of the same question with two answers of unequal length."""
    encoder, collator = backbone.encoder(), backbone.collator()
    samples = [encoder.encode(question(QUESTIONS[1], answer), [image]) for answer in answers]
    batch, _ = collator([dict(s, lane=0, index=i, bad=False) for i, s in enumerate(samples)])
    return batch


def test_gating_signal_ignores_padding_on_either_side(demo_model_dir, prompt):
    """The last prompt token's hidden state, hence r, is the same alone, left-padded (generation)
    and right-padded with labels (training); the slot state finds that token in each case."""
    backbone, gating = gated(demo_model_dir, layers=[2])
    with torch.no_grad():
        torch.nn.init.normal_(gating.gates["2"].out.weight, std=1.0)
    image = plain_images()[1]
    alone_inputs = prompt_inputs(backbone, eval_samples([image], QUESTIONS[1:]), TEMPLATE)  # a single unpadded prompt
    alone_ids = alone_inputs["input_ids"][0]
    row = int(prompt["attention_mask"].sum(1).argmin())  # the shorter prompt: left-padded in the batch
    assert not prompt["attention_mask"][row].all() and torch.equal(prompt["input_ids"][row][prompt["attention_mask"][row].bool()], alone_ids)

    def ratios(forward, expected_last: list[int]) -> torch.Tensor:
        with torch.no_grad():
            forward()
        assert last_prompt_index(backbone) == expected_last
        return gating.last_ratios[2]

    alone = ratios(lambda: backbone.model(**alone_inputs), [len(alone_ids) - 1])[0]
    left = ratios(lambda: backbone.model(**prompt), [prompt["input_ids"].shape[1] - 1] * 2)[row]
    batch = training_batch(backbone, image, ("Black, as the whole background is black.", "Black."))
    example = encode(question(QUESTIONS[1], "Black."), backbone.tokenizer, TEMPLATE, backbone.image_token_id, [backbone.image_inputs.slots_per_image])
    assert example.last_prompt_index == len(alone_ids) - 1 and example.input_ids[: len(alone_ids)] == alone_ids.tolist()
    assert not batch.attention_mask[1].all()  # the short answer's row is right-padded
    right = ratios(lambda: backbone.forward(batch), [len(alone_ids) - 1] * 2)[1]  # the position before the first label
    assert torch.allclose(alone, left, atol=1e-5) and torch.allclose(alone, right, atol=1e-5)
    assert not torch.allclose(alone, torch.tensor([0.5, 0.5]))
