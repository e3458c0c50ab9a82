"""The embedded tiny LLaVA-OneVision: a real ``LlavaOnevisionForConditionalGeneration`` with planted sinks.

LLaVA-OneVision's shape in miniature: a SigLIP tower (4 layers of width 64, no head) on 32-pixel
crops of 8-pixel patches (16 tokens per crop; SO400M: 729), AnyRes grids up to 2x2 crops with
``anyres_max_9`` as the released models (a 96-pixel demo scene: base crop + 2x2 tiles, 16 + 8x8
slots plus 8 newlines = 88), the Linear-GELU-Linear projector, a 4-layer Qwen2 LLM of width 128
and the ChatML tokenizer of the Qwen demo with ``<image>``. No demo grid exceeds 9 crops' worth of
tokens, so no demo image is shrunk: every slot is one crop token and a planted sink stays one
slot (a shrunk grid blends 4 tokens into each slot and would smear it over its neighbours; the
tests shrink grids with a smaller ``anyres_max``). Weights are random from a fixed seed, plus:

* V-sinks in SigLIP's first layer, as SO400M has them "from the first encoder layer on" (LSG
  paper, Appendix): a marker channel (patch brightness plus a per-position bias at two corners of
  every crop) drives a step of two MLP neurons of layer 0 (gelu(g m) - gelu(g m - 1): 0 below the
  marker's threshold, 1 just above it) that writes SINK_GAIN into SINK_DIM; the residual carries
  it to the last layer, which the projector reads. A step, not one steep neuron as in the tiny
  LLaVA: a crop corner falls anywhere on the scene (AnyRes tiles, the resized base crop), so
  corner brightness takes every value, and one neuron's output would fill the gap between sinks
  and ordinary tokens that find_sink_dims needs (real V-sinks are bimodal).
* L-sinks at raw magnitudes, as the LSG paper reads them on this model (tau_L 50, no RMSNorm): a
  second ViT marker at one edge position of each crop drives a step of two projector neurons that
  lifts LLM channel L_MARKER_DIM, and an MLP neuron of LLM layer 1 writes ~1000 into
  LLM_SINK_DIMS there; ordinary tokens stay below ~10.
* ``image_newline`` stays random but for L_MARKER_DIM (off): newline slots are never sinks (the
  backbone masks them out anyway).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    Qwen2Config,
    SiglipVisionConfig,
)

from sinktrain.backbones.processor import ImageTextProcessor
from sinktrain.backbones.profiles import SinkProfile, save_profile
from sinktrain.backbones.registry import PROFILE_FILE
from sinktrain.demo import llava
from sinktrain.demo.cache import reproducible
from sinktrain.demo.plant import plant_markers, plant_step, silence_channel, step_value
from sinktrain.demo.qwen2_vl import train_tokenizer

SEED = 0
CROP, PATCH = 32, 8  # 4 x 4 = 16 tokens per crop
SIDE = CROP // PATCH
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]
ASPECT = "anyres_max_9"  # as llava-onevision-qwen2-7b-ov; a 2x2 grid (4 crops' tokens) is never shrunk
VIT_HIDDEN, VIT_LAYERS, LLM_HIDDEN, LLM_LAYERS = 64, 4, 128, 4
SPECIAL_TOKENS = ["<image>", "<video>"]

# The V-sink circuit (see the module docstring).
SINK_DIM, MARKER_DIM, SINK_NEURONS, SINK_LAYER = 37, 5, (0, 1), 0
# Two corners of every crop, against half the patch brightness as in the tiny LLaVA: the top-left
# one fires on almost any content, the bottom-right one on white only. One or two sinks in 16
# tokens, so sinks stay a small share of the tokens, as in SO400M (find_sink_dims relies on it).
CANDIDATES, CANDIDATE_BIAS = (0, SIDE * SIDE - 1), (1.5, -0.3)
SINK_GAIN = 400.0  # sinks reach ~400 in SINK_DIM, ordinary tokens stay below ~10
TAU_V = 40.0  # the LSG paper's tau_V for SigLIP-SO400M
TAU_L2 = 90.0  # DIYSink's L2 rule: token norms <= ~22, V-sinks >= ~396 (the same tokens as TAU_V's)

# The L-sink circuit, read raw: one edge position per crop, firing on any content.
L_CANDIDATES, L_CANDIDATE_BIAS = (1,), (1.5,)
VIT_L_MARKER_DIM, L_MARKER_DIM, PROJECTOR_NEURONS, LLM_NEURON, L_SINK_LAYER = 9, 7, (0, 1), 0, 1
L_MARKER_OFFSET, L_MARKER_HEIGHT = -2.0, 8.0  # L_MARKER_DIM: -2 on ordinary visual tokens, +6 on marked ones
LLM_SINK_DIMS = (93, 17)
L_NEURON_GAIN, L_SINK_GAIN = 2.0, 20.0
TAU_L = 50.0  # the LSG paper's tau_L for LLaVA-OneVision, on raw magnitudes


def chat_template() -> str:
    """LLaVA-OneVision's HF chat template: each message's images first, one "<image>\\n" each."""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
        "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
        "{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def demo_config(tokenizer) -> LlavaOnevisionConfig:
    vision = SiglipVisionConfig(
        hidden_size=VIT_HIDDEN, intermediate_size=2 * VIT_HIDDEN, num_hidden_layers=VIT_LAYERS, num_attention_heads=4,
        image_size=CROP, patch_size=PATCH, vision_use_head=False,
    )
    text = Qwen2Config(
        hidden_size=LLM_HIDDEN, intermediate_size=2 * LLM_HIDDEN, num_hidden_layers=LLM_LAYERS, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_grid_pinpoints=PINPOINTS, vision_aspect_ratio=ASPECT,
        vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
    )


def plant_v_sinks(vision_tower) -> None:
    """The markers, the V-sink step, and a clean L marker: no layer writes VIT_L_MARKER_DIM, so the
    projector reads there what the embeddings put (random writes would push non-candidates over
    the projector's step)."""
    plant_markers(vision_tower.embeddings, ((MARKER_DIM, CANDIDATES, CANDIDATE_BIAS), (VIT_L_MARKER_DIM, L_CANDIDATES, L_CANDIDATE_BIAS)))
    silence_channel(vision_tower.encoder.layers, VIT_L_MARKER_DIM)
    mlp = vision_tower.encoder.layers[SINK_LAYER].mlp
    plant_step(mlp.fc1, mlp.fc2, SINK_NEURONS, MARKER_DIM, SINK_DIM, SINK_GAIN)


def planted_v_sink_value(mlp, fc1_out: torch.Tensor) -> torch.Tensor:
    """What the planted step writes into SINK_DIM, from layer SINK_LAYER's fc1 output (ground truth for tests)."""
    return step_value(mlp.activation_fn, fc1_out, SINK_NEURONS, SINK_GAIN)


def plant_l_sinks(model) -> None:
    """The projector step on the L marker and the LLM neuron writing the L-sink dims (raw)."""
    projector = model.model.multi_modal_projector
    projector.linear_2.weight[L_MARKER_DIM] = 0.0  # only the step writes L_MARKER_DIM
    plant_step(projector.linear_1, projector.linear_2, PROJECTOR_NEURONS, VIT_L_MARKER_DIM, L_MARKER_DIM, L_MARKER_HEIGHT)
    projector.linear_2.bias[L_MARKER_DIM] = L_MARKER_OFFSET
    llm = model.model.language_model
    # Nothing else writes L_MARKER_DIM up to the neuron: a text token's random value there, read
    # raw at this gain, would fire it (the tiny LLaVA reads RMS-normalised values and need not care).
    llm.embed_tokens.weight[:, L_MARKER_DIM] = 0.0
    model.model.image_newline[L_MARKER_DIM] = L_MARKER_OFFSET  # newline slots carry it too: off
    for layer in llm.layers[: L_SINK_LAYER + 1]:
        layer.self_attn.o_proj.weight[L_MARKER_DIM] = 0.0
    for layer in llm.layers[:L_SINK_LAYER]:
        layer.mlp.down_proj.weight[L_MARKER_DIM] = 0.0
    mlp = llm.layers[L_SINK_LAYER].mlp
    for proj in (mlp.gate_proj, mlp.up_proj):  # up = gate: the neuron outputs silu(g) * g
        proj.weight[LLM_NEURON] = 0.0
        proj.weight[LLM_NEURON, L_MARKER_DIM] = L_NEURON_GAIN
    mlp.down_proj.weight[:, LLM_NEURON] = 0.0
    mlp.down_proj.weight[list(LLM_SINK_DIMS), LLM_NEURON] = L_SINK_GAIN


def open_projector(model) -> None:
    """Blind to the planted channels, 4x the default output scale: as the tiny LLaVA (its docstring)."""
    projector = model.model.multi_modal_projector
    projector.linear_1.weight[:, [SINK_DIM, MARKER_DIM, VIT_L_MARKER_DIM]] = 0.0
    projector.linear_2.weight *= llava.PROJECTOR_GAIN


def demo_profile() -> SinkProfile:
    return SinkProfile(
        name="sinktrain-demo-llava_onevision", vision_tower="sinktrain-demo-siglip", vit_dims=[SINK_DIM], vit_layer=-1,
        criterion="dim_threshold", tau_v=TAU_V, tau_l2=TAU_L2, llm_dims=list(LLM_SINK_DIMS), tau_l=TAU_L, llm_rms_norm=False,
        hidden_size_vit=VIT_HIDDEN, hidden_size_llm=LLM_HIDDEN,
    )


def build(out_dir: Path) -> None:
    """Write the tiny LLaVA-OneVision: weights, config, tokenizer, image processor, sink profile."""
    out_dir.mkdir(parents=True)
    tokenizer = train_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    with reproducible(SEED), torch.no_grad():
        model = LlavaOnevisionForConditionalGeneration(demo_config(tokenizer)).eval()
        plant_v_sinks(model.model.vision_tower)
        open_projector(model)
        plant_l_sinks(model)
    model.save_pretrained(out_dir)
    # LlavaOnevisionProcessor cannot be built without torchvision (its video processor needs it):
    # the directory gets its parts, which is what sinktrain loads (sinktrain.backbones.processor).
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": CROP, "width": CROP}, image_grid_pinpoints=PINPOINTS, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    tokenizer.chat_template = chat_template()
    ImageTextProcessor(tokenizer, image_processor).save_pretrained(out_dir)
    save_profile(demo_profile(), out_dir / PROFILE_FILE)
