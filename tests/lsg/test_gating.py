"""LSG invariants on the tiny demo LLaVA: neutral at init, key scaling as the formula says, KV cache."""

import io
import json

import pytest
import torch
from transformers import LlavaForConditionalGeneration
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from sinktrain.backbones.registry import load_backbone
from sinktrain.errors import SinkTrainError
from sinktrain.lsg.gate import SinkGate
from sinktrain.lsg.gating import LayerGating
from sinktrain.demo import llava as demo
from sinktrain.lsg.keys import L_SINK, ORDINARY, TEXT, V_SINK, key_scale, visual_groups
from sinktrain.sinks import l_sink_mask

LAYERS = [1, 2]


@pytest.fixture(scope="module")
def prompt(demo_model_dir):
    backbone = load_backbone(str(demo_model_dir), attn_implementation="eager")
    from PIL import Image

    images = [Image.new("RGB", (64, 64), (255, 255, 255)), Image.new("RGB", (64, 64), (0, 0, 0))]
    text = ["USER: <image>\nHow many circles are there? ASSISTANT:", "USER: <image>\nWhat colour is it? ASSISTANT:"]
    backbone.tokenizer.padding_side = "left"
    inputs = backbone.processor(text=text, images=images, return_tensors="pt", padding=True)
    inputs["pixel_values"] = backbone.preprocess_images(images)
    return inputs


def gated(demo_model_dir, attn="eager", layers=LAYERS, groups=2):
    backbone = load_backbone(str(demo_model_dir), attn_implementation=attn)
    return backbone, LayerGating(backbone, layers, groups)


def stock_model(demo_model_dir, attn="eager"):
    return LlavaForConditionalGeneration.from_pretrained(str(demo_model_dir), attn_implementation=attn).eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_neutral_at_init_logits_and_generate(demo_model_dir, prompt, attn):
    backbone, gating = gated(demo_model_dir, attn)
    stock = stock_model(demo_model_dir, attn)
    gating.prepare(prompt["input_ids"])
    with torch.no_grad():
        ours = backbone.model(**prompt).logits
        theirs = stock(**prompt).logits
    assert torch.equal(ours, theirs)
    gating.prepare(prompt["input_ids"])
    ours_gen = backbone.model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours_gen, stock.generate(**prompt, max_new_tokens=6, do_sample=False))


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
    gating.prepare(prompt["input_ids"])
    ours, our_weights = attention_logits(backbone.model, prompt, 2)
    theirs, _ = attention_logits(stock_model(demo_model_dir), prompt, 2)
    prepared = gating.prepared
    assert prepared.v_sinks.sum() > 0
    for row in range(ours.shape[0]):
        sinks, rest = prepared.v_sinks[row], prepared.visual[row] & ~prepared.v_sinks[row]
        text = ~prepared.visual[row]
        assert torch.allclose(ours[row][..., sinks], c_sink * theirs[row][..., sinks], rtol=1e-4, atol=1e-5)
        assert torch.allclose(ours[row][..., rest], c_rest * theirs[row][..., rest], rtol=1e-4, atol=1e-5)
        assert torch.allclose(ours[row][..., text], theirs[row][..., text], rtol=1e-5, atol=1e-6)
    # ...and these logits are what eager attention softmaxes (causal + padding mask)
    length = ours.shape[-1]
    allowed = torch.ones(length, length).tril().bool() & prompt["attention_mask"].bool()[:, None, None, :]
    expected = ours.masked_fill(~allowed, float("-inf")).softmax(-1)
    real = prompt["attention_mask"].bool()
    assert torch.allclose(our_weights.transpose(1, 2)[real], expected.transpose(1, 2)[real], atol=1e-5)


def test_sdpa_agrees_with_eager_under_gates(demo_model_dir, prompt):
    outputs = []
    for attn in ("eager", "sdpa"):
        backbone, gating = gated(demo_model_dir, attn, layers=[1, 3])
        gating.fixed.update({1: torch.tensor([0.2, 1.8]), 3: torch.tensor([1.5, 0.5])})
        gating.prepare(prompt["input_ids"])
        with torch.no_grad():
            outputs.append(backbone.model(**prompt).logits)
    real = prompt["attention_mask"].bool()  # padded query rows are undefined and differ by kernel
    difference = (outputs[0][real] - outputs[1][real]).abs().max().item()
    assert difference < 1e-5, difference


def test_generate_with_cache_equals_full_recompute(demo_model_dir, prompt):
    backbone, gating = gated(demo_model_dir, layers=[1, 2])
    with torch.no_grad():
        for gate in gating.gates.values():  # non-neutral learned gates
            torch.nn.init.normal_(gate.out.weight, std=1.0)
    gating.prepare(prompt["input_ids"])
    cached = backbone.model.generate(**prompt, max_new_tokens=5, do_sample=False)
    # greedy decoding by full recompute: every step re-runs the whole sequence without a cache
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    for _ in range(5):
        gating.prepare(ids, torch.full((ids.shape[0],), prompt["input_ids"].shape[1] - 1))
        with torch.no_grad():
            logits = backbone.model(input_ids=ids, attention_mask=mask, pixel_values=prompt["pixel_values"], use_cache=False).logits
        next_ids = logits[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, next_ids], 1), torch.cat([mask, torch.ones_like(next_ids)], 1)
    assert torch.equal(cached, ids)


def test_bad_layers_and_groups(demo_model_dir, tmp_path):
    backbone = load_backbone(str(demo_model_dir))
    with pytest.raises(SinkTrainError, match=r"out of range: this LLM has 4 decoder layers \(0..3\)"):
        LayerGating(backbone, [7])
    profile = json.loads((demo_model_dir / "sink_profile.json").read_text())
    (tmp_path / "no_llm.json").write_text(json.dumps({**profile, "llm_dims": [], "tau_l": None}))
    without_llm_dims = load_backbone(str(demo_model_dir), sink_profile=str(tmp_path / "no_llm.json"))
    with pytest.raises(SinkTrainError, match="--groups 3 needs LLM sink dims"):
        LayerGating(without_llm_dims, [1], groups=3)


def planted_l_sinks(backbone, inputs):
    """Ground truth: visual tokens where the planted LLM neuron fired, minus V-sinks."""
    captured = {}
    mlp = backbone.model.model.language_model.layers[demo.L_SINK_LAYER].mlp
    hook = mlp.gate_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("g", o[..., demo.LLM_NEURON]))
    with torch.no_grad():
        hidden = backbone.model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    return captured["g"] > 0, hidden


def test_three_groups_find_exactly_the_planted_l_sinks(demo_model_dir):
    from PIL import Image

    from sinktrain.data.scenes import demo_samples

    backbone, gating = gated(demo_model_dir, layers=[2, 3], groups=3)
    images = [Image.open(io.BytesIO(png)) for _, png in demo_samples(40, seed=5) if png]
    ids = torch.tensor([[1] + [backbone.image_token_id] * backbone.num_image_tokens + [5, 6]] * len(images))
    inputs = {"input_ids": ids, "pixel_values": backbone.preprocess_images(images)}
    gating.prepare(ids)
    fired, hidden = planted_l_sinks(backbone, inputs)
    prepared = gating.prepared
    truth = fired & prepared.visual & ~prepared.v_sinks
    assert truth.sum(1).float().mean() >= 1.0  # the fixture has L-sinks to find
    profile = backbone.sink_profile
    for layer in (2, 3):  # L-sinks exist from layer 2 on, as in LLaMA-2
        found = l_sink_mask(hidden[layer], prepared.visual, prepared.v_sinks, profile.llm_dims, profile.tau_l)
        assert torch.equal(found, truth), layer
        groups = gating._groups_at(hidden[layer], prepared)
        assert torch.equal(groups == L_SINK, truth)
        assert torch.equal(groups == V_SINK, prepared.v_sinks)
        assert torch.equal(groups == ORDINARY, prepared.visual & ~truth & ~prepared.v_sinks)


def test_gating_signal_ignores_padding_on_either_side(demo_model_dir, prompt):
    """The last prompt token's hidden state, hence r, is the same alone, left-padded (generation)
    and right-padded with an explicit index (training)."""
    backbone, gating = gated(demo_model_dir, layers=[2])
    with torch.no_grad():
        torch.nn.init.normal_(gating.gates["2"].out.weight, std=1.0)
    row = int(prompt["attention_mask"].sum(1).argmin())  # the shorter prompt: left-padded in the batch
    real = prompt["attention_mask"][row].bool()
    assert not real.all()
    alone_ids = prompt["input_ids"][row][real].unsqueeze(0)
    pixels = prompt["pixel_values"][row : row + 1]

    def ratios(input_ids, attention_mask, last=None):
        gating.prepare(input_ids, last)
        with torch.no_grad():
            backbone.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixels)
        return gating.last_ratios[2][0]

    alone = ratios(alone_ids, torch.ones_like(alone_ids))
    left = ratios(prompt["input_ids"][row : row + 1], prompt["attention_mask"][row : row + 1])
    pad = torch.full((1, 5), backbone.tokenizer.pad_token_id)
    right_ids = torch.cat([alone_ids, pad], 1)
    right_mask = torch.cat([torch.ones_like(alone_ids), torch.zeros_like(pad)], 1)
    right = ratios(right_ids, right_mask, torch.tensor([alone_ids.shape[1] - 1]))
    assert torch.allclose(alone, left, atol=1e-5) and torch.allclose(alone, right, atol=1e-5)
    assert not torch.allclose(alone, torch.tensor([0.5, 0.5]))
