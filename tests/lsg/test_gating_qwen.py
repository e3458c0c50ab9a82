"""LSG invariants on the tiny demo Qwen2-VL and Qwen2.5-VL: dynamic resolution, 2x2 merger, M-RoPE.

The same core invariants as tests/lsg/test_gating.py (LLaVA), in fp32: neutral gates are the
stock model (logits and generate()), pre-softmax logits to V-sink / other visual / text keys are
c_sink / c_rest / 1 times stock (with the model's own M-RoPE positions and rotary embedding),
cached generation equals full recompute, and 3 groups find exactly the planted L-sinks (SDPA
against eager: tests/backbones/test_contract.py, every family). Prompts are demo scenes (their magenta corner watermark is where the
V-sinks are planted, blue objects carry the L-sinks) in the qwen2_vl chat format.
"""

import importlib
import io

import pytest
import torch
from PIL import Image

from sinktrain.backbones.registry import load_backbone
from sinktrain.data.chat import IGNORE_INDEX
from sinktrain.data.eval_set import EvalSample
from sinktrain.data.scenes import MARK_COLOUR, MARK_SIZE, demo_samples
from sinktrain.demo import ensure_demo_model
from sinktrain.demo import qwen2_vl as demo
from sinktrain.eval.generate import prompt_inputs
from sinktrain.lsg.gating import LayerGating

from gate_checks import assert_keys_scaled, assert_three_groups, cached_generate_equals_recompute, last_prompt_index

TEMPLATE = "qwen2_vl"
QUESTIONS = ("How many objects are in the image?", "What colour are the objects?", "Is it small?")  # unequal lengths
VISION = ("pixel_values", "image_grid_thw")


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def model_dir(request):
    return ensure_demo_model(request.param)


def scenes(count: int, seed: int = 5) -> list[Image.Image]:
    return [Image.open(io.BytesIO(png)) for _, png in demo_samples(4 * count, seed=seed) if png][:count]


def question(text: str, answer: str | None = None) -> list[dict]:
    turns = [{"from": "human", "value": f"<image>\n{text}"}]
    return turns + ([{"from": "gpt", "value": answer}] if answer is not None else [])


def eval_samples(images, texts) -> list[EvalSample]:
    return [EvalSample(f"s{i}", "other", question(text), "", (image,) if image is not None else ()) for i, (image, text) in enumerate(zip(images, texts))]


@pytest.fixture(scope="module")
def prompt(model_dir):
    """Three left-padded generation prompts (two images with a V-sink, one without), model kwargs."""
    return prompt_inputs(load_backbone(str(model_dir)), eval_samples(scenes(3), QUESTIONS), TEMPLATE)


def gated(model_dir, attn="eager", layers=(1, 2), groups=2):
    backbone = load_backbone(str(model_dir), attn_implementation=attn)
    return backbone, LayerGating(backbone, list(layers), groups)


def stock_model(backbone, model_dir, attn="eager"):
    return type(backbone.model).from_pretrained(str(model_dir), attn_implementation=attn, dtype=torch.float32).eval()


def attention_logits(model, inputs, layer):
    """Pre-softmax attention logits (B, H, T, T) at `layer` from the captured q_proj / k_proj outputs:
    M-RoPE positions from the model's get_rope_index, its rotary embedding and apply_rotary_pos_emb."""
    captured = {}
    language = model.model.language_model
    attn = language.layers[layer].self_attn

    def grab(name):
        return lambda module, args, output: captured.__setitem__(name, output.detach())

    handles = [attn.q_proj.register_forward_hook(grab("q")), attn.k_proj.register_forward_hook(grab("k"))]
    with torch.no_grad():
        weights = model(**inputs, output_attentions=True).attentions[layer]
        positions, _ = model.model.get_rope_index(
            inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"]
        )
    for handle in handles:
        handle.remove()
    batch, length, _ = captured["q"].shape
    q, k = (captured[n].view(batch, length, -1, attn.head_dim).transpose(1, 2) for n in ("q", "k"))
    assert positions.shape == (3, batch, length)  # temporal, height, width rows
    cos, sin = language.rotary_emb(q, positions)
    q, k = importlib.import_module(type(model).__module__).apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(attn.num_key_value_groups, dim=1)  # grouped-query attention
    return q @ k.transpose(-1, -2) * attn.scaling, weights


def test_key_scaling_matches_the_formula_under_mrope(model_dir, prompt):
    """Logits to V-sink keys are c_sink x stock, to other visual keys c_rest x stock, to text keys unchanged."""
    backbone, gating = gated(model_dir, layers=[2])
    c_sink, c_rest = 0.4, 1.6
    gating.fixed[2] = torch.tensor([c_sink, c_rest])
    ours, our_weights = attention_logits(backbone.model, prompt, 2)
    theirs, _ = attention_logits(stock_model(backbone, model_dir), prompt, 2)
    state = backbone.slots.state
    assert_keys_scaled(ours, theirs, our_weights, state, prompt["attention_mask"], c_sink, c_rest)


def test_generate_with_cache_equals_full_recompute(model_dir, prompt):
    backbone, gating = gated(model_dir, layers=[1, 2])
    generated = cached_generate_equals_recompute(
        backbone, gating, prompt, {name: prompt[name] for name in VISION}, pad_token_id=backbone.tokenizer.pad_token_id
    )
    assert not (generated == backbone.tokenizer.eos_token_id).any()  # no row finished early


def watermark_slot(image: Image.Image, grid_thw: torch.Tensor) -> int:
    """The slot (row-major in the image's merged grid) under the corner where the magenta watermark shows most."""
    pixels = torch.tensor(list(image.convert("RGB").getdata()), dtype=torch.float).view(image.height, image.width, 3)
    rows, cols = (int(n) // demo.MERGE for n in grid_thw[1:])

    def magenta(r: int, c: int) -> float:
        top, left = r * (image.height - MARK_SIZE), c * (image.width - MARK_SIZE)
        block = pixels[top : top + MARK_SIZE, left : left + MARK_SIZE]
        return float(((block - torch.tensor(MARK_COLOUR)).abs().sum(-1) < 30).float().mean())

    r, c = max(((r, c) for r in (0, 1) for c in (0, 1)), key=lambda corner: magenta(*corner))
    return r * (rows - 1) * cols + c * (cols - 1)


def test_three_groups_find_exactly_the_planted_l_sinks(model_dir):
    backbone, gating = gated(model_dir, layers=[2, 3], groups=3)
    images = scenes(40)
    inputs = prompt_inputs(backbone, eval_samples(images, ["What is it?"] * len(images)), TEMPLATE)
    captured = {}
    mlp = backbone.decoder_layers()[demo.L_SINK_LAYER].mlp
    hook = mlp.gate_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("g", o[..., demo.LLM_NEURON]))
    with torch.no_grad():
        hidden = backbone.model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    state = backbone.slots.state
    fired = captured["g"] > 0
    assert fired[~state.visual].any()  # <|im_start|> carries the marker too: the massive dims show there
    truth = fired & state.patch & ~state.v_sinks  # ground truth: the planted LLM neuron fired on that slot
    assert truth.sum() >= 10 and truth.any(1).sum() >= 3  # the fixture has L-sinks to find
    assert state.v_sinks.sum(1).le(1).all() and state.v_sinks.sum() >= 30
    for row, image in enumerate(images):  # a V-sink is the slot under the image's watermark (slot order, not window order)
        sinks = state.v_sinks[row][state.patch[row]].nonzero().flatten().tolist()
        assert sinks in ([], [watermark_slot(image, inputs["image_grid_thw"][row])]), row
    assert_three_groups(backbone, gating, hidden, truth, (2, 3))  # the neuron is in layer 1's MLP: L-sinks enter layers 2 and 3


def test_gating_signal_and_slot_state_under_padding(model_dir, prompt):
    """r at the last prompt token is the same for a single unpadded prompt, the left-padded batch
    row (M-RoPE positions follow the mask) and a right-padded training batch with labels."""
    backbone, gating = gated(model_dir, layers=[2])
    with torch.no_grad():
        torch.nn.init.normal_(gating.gates["2"].out.weight, std=1.0)
    image = scenes(3)[2]
    alone_inputs = prompt_inputs(backbone, eval_samples([image], QUESTIONS[2:]), TEMPLATE)
    alone_length = alone_inputs["input_ids"].shape[1]
    with torch.no_grad():
        backbone.model(**alone_inputs)
    assert last_prompt_index(backbone) == [alone_length - 1]
    alone = gating.last_ratios[2][0]
    with torch.no_grad():
        backbone.model(**prompt)
    assert last_prompt_index(backbone) == [prompt["input_ids"].shape[1] - 1] * 3
    assert prompt["attention_mask"][2].sum() == alone_length  # the shortest prompt, left-padded
    left = gating.last_ratios[2][2]
    encoder = backbone.encoder()
    samples = [encoder.encode(question(QUESTIONS[2], answer), [image]) for answer in ("No, the shapes are large.", "No.")]
    batch, _ = backbone.collator()([dict(s, lane=0, index=i, bad=False) for i, s in enumerate(samples)])
    assert not batch.attention_mask[1].all()  # the short answer's row is right-padded
    with torch.no_grad():
        backbone.forward(batch)
    first_label = [int((row != IGNORE_INDEX).nonzero()[0]) for row in batch.labels]
    assert last_prompt_index(backbone) == [f - 1 for f in first_label] == [alone_length - 1] * 2
    right = gating.last_ratios[2][1]
    assert torch.allclose(alone, left, atol=1e-5) and torch.allclose(alone, right, atol=1e-5)
    assert not torch.allclose(alone, torch.tensor([0.5, 0.5]))
