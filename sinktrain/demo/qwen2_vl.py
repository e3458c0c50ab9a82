"""The embedded tiny Qwen2-VL and Qwen2.5-VL: real transformers classes with planted sinks.

Both in miniature (4 ViT blocks of width 64 on 8-pixel patches, 2x2 merger, 4-layer Qwen2 LLM of
width 128 with M-RoPE, ChatML byte-level BPE tokenizer trained on the demo vocabulary, the PIL
image processor at 16-256 slots per image), saved as normal Hugging Face model directories. A
96-pixel demo scene becomes 12x12 patches, 36 slots. Qwen2.5-VL adds window attention (2x2-slot
windows, full attention in blocks 1 and 3) and RMSNorm/SwiGLU ViT blocks.

Qwen's ViT has no absolute position embedding, so its sinks cannot sit at fixed positions like
the tiny LLaVA's; they are planted on content, as massive activations are in real ViTs:

* V-sinks: block 0's attention output bias writes a constant channel (CONST_DIM), so the blocks'
  norms scale every patch alike (a massive constant channel, as real ViTs have); a marker channel
  of the patch embedding measures how magenta a patch is, and one MLP neuron of block SINK_LAYER
  fires on patches (nearly) filled by the scenes' corner watermark (sinktrain.data.scenes) and
  writes massive values into SINK_DIM, which the residual stream carries to the merger: up to 4
  patches, one slot, per image, at one of its corners.
* L-sinks: a second marker (blue minus red) for patches inside blue objects; the merger lifts LLM
  channel L_MARKER_DIM on slots whose first patch has it, and an MLP neuron of LLM layer 1 writes
  massive values into LLM_SINK_DIMS there. The ``<|im_start|>`` embedding carries the same
  marker, so, as in real LLMs, the massive dims also show at the first token and each turn's
  delimiter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from sinktrain.backbones.processor import ImageTextProcessor
from sinktrain.backbones.profiles import SinkProfile, save_profile
from sinktrain.backbones.registry import PROFILE_FILE
from sinktrain.demo.cache import reproducible

SEED = 0
PATCH, MERGE, TEMPORAL = 8, 2, 2
MIN_PIXELS, MAX_PIXELS = 64 * 64, 256 * 256  # 16 to 256 slots per image
VIT_HIDDEN, VIT_LAYERS, LLM_HIDDEN, LLM_LAYERS = 64, 4, 128, 4
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# The planted V-sink circuit (see the module docstring). Pixel values are CLIP-normalised.
CONST_DIM, CONST_VALUE = 3, 30.0  # makes each norm scale ~ sqrt(64) / 30 for every patch
SINK_DIM, MARKER_DIM, SINK_NEURON, SINK_LAYER = 37, 5, 0, 1
MAGENTA_THRESHOLD = 4.8  # R + B - 2G: the watermark 6.0, purple objects 3.6, red 3.0, backgrounds ~0
NEURON_GAIN, SINK_GAIN = 32.0, 20.0
TAU_V = 10.0  # in the empty gap: ordinary patches stay below ~1.5 in SINK_DIM, sinks reach 60-600
TAU_L2 = 55.0  # DIYSink's L2 rule: patch norms <= ~33, V-sink patches >= ~99 (the same tokens as TAU_V's)

# The planted L-sink circuit.
VIT_L_MARKER_DIM, COOL_THRESHOLD = 9, 2.0  # blue objects reach 3.0 (2.5 after a LayerNorm's mean shift)
MERGER_GAIN = 32.0  # steep: a slot is clearly an L-sink or not
L_MARKER_DIM, MERGER_NEURON, LLM_NEURON, L_SINK_LAYER = 7, 0, 0, 1
L_MARKER_OFFSET = -2.0
LLM_SINK_DIMS = (93, 17)
L_NEURON_GAIN = 2.0
TAU_L = 5.0  # after weightless RMSNorm, as the tiny LLaVA's
DELIMITER_MARKER = 4.0  # <|im_start|>'s embedding in L_MARKER_DIM


def chat_template() -> str:
    """Qwen-VL's ChatML rendering of messages (default system prompt, images and text in order)."""
    return (
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def train_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE with Qwen2's pre-tokenizer, trained on the demo vocabulary, plus Qwen's specials."""
    from sinktrain.data.chat.formats import QWEN_SYSTEM
    from sinktrain.data.scenes import vocabulary_sentences

    reference = Qwen2Tokenizer().backend_tokenizer  # Qwen2's own normaliser and pre-tokenizer
    bpe = Tokenizer(models.BPE())
    bpe.normalizer, bpe.pre_tokenizer = reference.normalizer, reference.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    sentences = vocabulary_sentences() + [QWEN_SYSTEM, "system\nuser\nassistant\n"]
    bpe.train_from_iterator(sentences * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tokenizer


def demo_config(tokenizer, windowed: bool):
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=LLM_HIDDEN, intermediate_size=2 * LLM_HIDDEN, num_hidden_layers=LLM_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},  # head_dim 32: 16 rotary pairs
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(depth=VIT_LAYERS, num_heads=4, in_channels=3, patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL)
    if windowed:
        vision.update(hidden_size=VIT_HIDDEN, intermediate_size=2 * VIT_HIDDEN, out_hidden_size=LLM_HIDDEN, window_size=2 * MERGE * PATCH, fullatt_block_indexes=[1, 3], hidden_act="silu")
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    vision.update(embed_dim=VIT_HIDDEN, hidden_size=LLM_HIDDEN, mlp_ratio=2, hidden_act="quick_gelu")
    return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)


def patch_marker(patch_embed, dim: int, colour: tuple[float, float, float]) -> None:
    """Channel ``dim`` of the patch embedding: the patch's mean of ``colour`` . (R, G, B), over
    every pixel and both temporal copies."""
    weight = patch_embed.proj.weight  # (D, 3, T, P, P)
    pixels = weight[dim, 0].numel()
    for channel, factor in enumerate(colour):
        weight[dim, channel] = factor / pixels


def plant_neuron(mlp, neuron: int, read: int, threshold: float, write: list[int], gain: float, scale: float) -> None:
    """One MLP neuron: fires when channel ``read`` (times ``scale``, what the block's norm does to
    it) exceeds ``threshold``, and writes ``gain`` x its activation into ``write``."""
    if hasattr(mlp, "fc1"):  # Qwen2-VL: fc1 -> quick_gelu -> fc2
        ins, out = [mlp.fc1], mlp.fc2
    else:  # Qwen2.5-VL: silu(gate) * up -> down; gate = up, so the neuron outputs silu(g) * g
        ins, out = [mlp.gate_proj, mlp.up_proj], mlp.down_proj
    for proj in ins:
        proj.weight[neuron] = 0.0
        proj.weight[neuron, read] = NEURON_GAIN / scale
        proj.bias[neuron] = -NEURON_GAIN * threshold
    out.weight[:, neuron] = 0.0
    out.weight[write, neuron] = gain


def plant_v_sinks(visual) -> float:
    """The ViT side of both circuits; returns the factor the norms apply to a marker channel."""
    patch_marker(visual.patch_embed, MARKER_DIM, (1.0, -2.0, 1.0))  # magenta
    patch_marker(visual.patch_embed, VIT_L_MARKER_DIM, (-1.0, 0.0, 1.0))  # cool: blue minus red
    attn = visual.blocks[0].attn.proj
    attn.weight[CONST_DIM] = 0.0
    attn.bias[CONST_DIM] = CONST_VALUE
    scale = VIT_HIDDEN ** 0.5 / CONST_VALUE  # a norm divides by ~ CONST_VALUE / sqrt(width)
    plant_neuron(visual.blocks[SINK_LAYER].mlp, SINK_NEURON, MARKER_DIM, MAGENTA_THRESHOLD, [SINK_DIM], SINK_GAIN, scale)
    return scale


def plant_l_sinks(model, marker_scale: float) -> None:
    """The merger neuron (first patch of each 2x2 group) and the LLM neuron writing the L-sink dims."""
    merger = model.model.visual.merger
    first, last = merger.mlp[0], merger.mlp[2]
    for dim in (SINK_DIM, MARKER_DIM, VIT_L_MARKER_DIM, CONST_DIM):  # blind to the planted channels
        first.weight[:, dim::VIT_HIDDEN] = 0.0
    first.weight[MERGER_NEURON] = 0.0
    first.weight[MERGER_NEURON, VIT_L_MARKER_DIM] = MERGER_GAIN / marker_scale
    first.bias[MERGER_NEURON] = -MERGER_GAIN * COOL_THRESHOLD
    last.weight[:, MERGER_NEURON] = 0.0
    last.weight[L_MARKER_DIM, MERGER_NEURON] = 1.0
    last.bias[L_MARKER_DIM] = L_MARKER_OFFSET
    mlp = model.model.language_model.layers[L_SINK_LAYER].mlp
    for proj in (mlp.gate_proj, mlp.up_proj):
        proj.weight[LLM_NEURON] = 0.0
        proj.weight[LLM_NEURON, L_MARKER_DIM] = L_NEURON_GAIN
    mlp.down_proj.weight[:, LLM_NEURON] = 0.0
    mlp.down_proj.weight[list(LLM_SINK_DIMS), LLM_NEURON] = 1.0


def plant_delimiter(model, tokenizer) -> None:
    """<|im_start|> carries the L-marker: the massive LLM dims show at each turn's first token too.
    Every other token gets a negative marker, so what layer 0's attention mixes into text tokens
    from an <|im_start|> cannot lift them over the neuron's threshold (only delimiters fire)."""
    embeddings = model.model.language_model.embed_tokens.weight
    embeddings[:, L_MARKER_DIM] = L_MARKER_OFFSET / 4
    embeddings[tokenizer.convert_tokens_to_ids("<|im_start|>"), L_MARKER_DIM] = DELIMITER_MARKER


def demo_profile(windowed: bool) -> SinkProfile:
    return SinkProfile(
        name="sinktrain-demo-qwen2_5_vl" if windowed else "sinktrain-demo-qwen2_vl",
        vision_tower="sinktrain-demo-qwen-vit", vit_dims=[SINK_DIM], vit_layer=-1, criterion="dim_threshold",
        tau_v=TAU_V, tau_l2=TAU_L2, llm_dims=list(LLM_SINK_DIMS), tau_l=TAU_L, hidden_size_vit=VIT_HIDDEN, hidden_size_llm=LLM_HIDDEN,
    )


def build(out_dir: Path, windowed: bool) -> None:
    """Write the tiny Qwen2-VL (or Qwen2.5-VL): weights, config, tokenizer, processor, sink profile."""
    out_dir.mkdir(parents=True)
    tokenizer = train_tokenizer()
    model_class = Qwen2_5_VLForConditionalGeneration if windowed else Qwen2VLForConditionalGeneration
    with reproducible(SEED), torch.no_grad():
        model = model_class(demo_config(tokenizer, windowed)).eval()
        plant_l_sinks(model, plant_v_sinks(model.model.visual))
        plant_delimiter(model, tokenizer)
    model.save_pretrained(out_dir)
    # Qwen2VLProcessor itself cannot be built without torchvision (its video processor needs it):
    # the directory gets its parts, which is what sinktrain loads (sinktrain.backbones.processor).
    image_processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL)
    tokenizer.chat_template = chat_template()
    ImageTextProcessor(tokenizer, image_processor).save_pretrained(out_dir)
    save_profile(demo_profile(windowed), out_dir / PROFILE_FILE)
