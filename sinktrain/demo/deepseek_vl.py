"""The embedded tiny DeepSeek-VL: a real ``DeepseekVLForConditionalGeneration`` with planted sinks.

DeepSeek-VL's shape in miniature: a SigLIP tower (4 layers of width 64, no head) on 64-pixel
images of 8-pixel patches (64 slots per image; the released models: 576), whose output after
``post_layernorm`` feeds the Linear-GELU-Linear ``aligner``; a 4-layer LLaMA LLM of width 128; a
sentencepiece tokenizer trained on the demo vocabulary and DeepSeek-VL's system prompt, with
``<image_placeholder>``; DeepSeek-VL's processor (resize the long side, pad to a square with the
mean colour) and its chat template. Weights are random from a fixed seed, plus:

* V-sinks: the tiny LLaVA's corner markers (1-4 candidates firing by background brightness)
  drive a step of two MLP neurons in SigLIP layer 0 that writes SINK_GAIN into SINK_DIM. The
  aligner reads *after* the final LayerNorm, which divides each token by its own spread: a sink
  token's SINK_DIM comes out near sqrt(64) = 8 whatever its size, an ordinary token's near its
  z-score. ``post_layernorm`` weighs SINK_DIM by POST_NORM_GAIN, as trained SigLIPs keep massive
  channels through the norm, so sinks reach ~60 there and ordinary tokens stay under ~25: tau_V
  belongs to the post-norm tensor, and find_sink_dims has to measure it there.
* L-sinks (VAR's RMS-normalised rule, as LLaMA-2's): a second ViT marker at four edge patches,
  left alone by every SigLIP block and passed by the norm with its sign, drives a step of two
  aligner neurons that lifts LLM channel L_MARKER_DIM; an MLP neuron of LLM layer 1 then writes
  massive values into LLM_SINK_DIMS.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    DeepseekVLConfig,
    DeepseekVLForConditionalGeneration,
    DeepseekVLImageProcessorPil,
    DeepseekVLProcessor,
    LlamaConfig,
    LlamaTokenizer,
    SiglipVisionConfig,
)

from sinktrain.backbones.profiles import SinkProfile, save_profile
from sinktrain.backbones.registry import PROFILE_FILE
from sinktrain.data.chat.formats import DEEPSEEK_SYSTEM
from sinktrain.demo import llava
from sinktrain.demo.cache import reproducible
from sinktrain.demo.plant import plant_markers, plant_step, silence_channel, step_value

SEED = 0
IMAGE_SIZE, PATCH = 64, 8  # 8 x 8 = 64 slots per image
VIT_HIDDEN, VIT_LAYERS, LLM_HIDDEN, LLM_LAYERS = 64, 4, 128, 4
IMAGE_TOKEN = "<image_placeholder>"

# The V-sink circuit: the tiny LLaVA's candidates (SigLIP has no CLS: positions are patches).
SINK_DIM, MARKER_DIM, SINK_NEURONS, SINK_LAYER = 37, 5, (0, 1), 0
CANDIDATES, CANDIDATE_BIAS = llava.CANDIDATE_PATCHES, llava.CANDIDATE_BIAS
SINK_GAIN = 400.0
# The step reads the marker after layer 0's LayerNorm, which shifts every channel by the token's
# mean: on bright images ordinary patches reach ~0.3 there, so the step starts at 0.5.
SINK_THRESHOLD = 0.5
POST_NORM_GAIN = 8.0
TAU_V = 40.0
TAU_L2 = 40.0  # DIYSink's L2 rule after post_layernorm: token norms <= ~25, V-sinks >= ~63 (TAU_V's tokens)

# The L-sink circuit (RMS-normalised, as the tiny LLaVA's).
L_CANDIDATES, L_CANDIDATE_BIAS = llava.L_CANDIDATE_PATCHES, llava.L_CANDIDATE_BIAS
VIT_L_MARKER_DIM, L_MARKER_DIM, ALIGNER_NEURONS, LLM_NEURON, L_SINK_LAYER = 9, 7, (0, 1), 0, 1
L_MARKER_OFFSET, L_MARKER_HEIGHT = -2.0, 8.0  # L_MARKER_DIM: -2 on ordinary visual tokens, +6 on marked ones
LLM_SINK_DIMS = llava.LLM_SINK_DIMS
TAU_L = llava.TAU_L


def chat_template() -> str:
    """DeepSeek-VL's HF chat template: the system prompt, "User: " / "Assistant: " turns, images
    where they stand, a message's text stripped at its ends, "\\n\\n" after a question and eos
    after an answer (but the last one rendered)."""
    return (
        "{{ '" + DEEPSEEK_SYSTEM + "' }}\n\n"
        "{% for message in messages %}{% set role = message['role'] | lower %}{% set parts = message['content'] %}"
        "{% if role == 'assistant' %}Assistant:"
        "{% if not (loop.last and not add_generation_prompt and parts[0]['type'] == 'text' and parts[0]['text'] == '') %} {% endif %}"
        "{% else %}{{ role | capitalize }}: {% endif %}"
        "{% for part in parts %}{% if part['type'] == 'image' %}" + IMAGE_TOKEN + "{% else %}{% set text = part['text'] %}"
        "{% if loop.first %}{% set text = text.lstrip() %}{% endif %}{% if loop.last %}{% set text = text.rstrip() %}{% endif %}"
        "{% if not loop.first and parts[loop.index0 - 1]['type'] == 'text' %} {% endif %}{{ text }}{% endif %}{% endfor %}"
        "{% if not loop.last or add_generation_prompt %}{{ '\\n\\n' if role == 'user' else eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )


def train_tokenizer(out_dir: Path) -> LlamaTokenizer:
    llava.train_tokenizer(out_dir, (DEEPSEEK_SYSTEM, "User: Assistant:"))  # writes tokenizer.model
    tokenizer = LlamaTokenizer.from_pretrained(str(out_dir), add_bos_token=True, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def vision_config() -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=VIT_HIDDEN, intermediate_size=2 * VIT_HIDDEN, num_hidden_layers=VIT_LAYERS, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH, vision_use_head=False,
    )


def text_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=LLM_HIDDEN, intermediate_size=2 * LLM_HIDDEN, num_hidden_layers=LLM_LAYERS, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def plant_v_sinks(siglip) -> None:
    """Both markers, the V-sink step, a clean L marker, and the post-norm weight on SINK_DIM."""
    plant_markers(siglip.embeddings, ((MARKER_DIM, CANDIDATES, CANDIDATE_BIAS), (VIT_L_MARKER_DIM, L_CANDIDATES, L_CANDIDATE_BIAS)))
    silence_channel(siglip.encoder.layers, VIT_L_MARKER_DIM)
    mlp = siglip.encoder.layers[SINK_LAYER].mlp
    plant_step(mlp.fc1, mlp.fc2, SINK_NEURONS, MARKER_DIM, SINK_DIM, SINK_GAIN, SINK_THRESHOLD)
    siglip.post_layernorm.weight[SINK_DIM] = POST_NORM_GAIN
    siglip.post_layernorm.bias[SINK_DIM] = 0.0
    siglip.post_layernorm.weight[VIT_L_MARKER_DIM] = 1.0
    siglip.post_layernorm.bias[VIT_L_MARKER_DIM] = 0.0


def planted_v_sink_value(mlp, fc1_out: torch.Tensor) -> torch.Tensor:
    """What the planted step writes into SINK_DIM (before the norm), from layer SINK_LAYER's fc1 output."""
    return step_value(mlp.activation_fn, fc1_out, SINK_NEURONS, SINK_GAIN)


def plant_l_sinks(first, second, llm, columns=None) -> None:
    """An aligner step (``first`` -> activation -> ``second``, entering it at ``columns``) on the L
    marker, and the LLM neuron."""
    second.weight[L_MARKER_DIM] = 0.0  # only the step writes L_MARKER_DIM
    plant_step(first, second, ALIGNER_NEURONS, VIT_L_MARKER_DIM, L_MARKER_DIM, L_MARKER_HEIGHT, columns=columns)
    second.bias[L_MARKER_DIM] = L_MARKER_OFFSET
    mlp = llm.layers[L_SINK_LAYER].mlp
    for proj in (mlp.gate_proj, mlp.up_proj):  # up = gate: the neuron outputs silu(g) * g
        proj.weight[LLM_NEURON] = 0.0
        proj.weight[LLM_NEURON, L_MARKER_DIM] = llava.L_NEURON_GAIN
    mlp.down_proj.weight[:, LLM_NEURON] = 0.0
    mlp.down_proj.weight[list(LLM_SINK_DIMS), LLM_NEURON] = 1.0


def open_aligner(first, second) -> None:
    """Blind to the planted channels, 4x the default output scale: as the tiny LLaVA's projector."""
    first.weight[:, [SINK_DIM, MARKER_DIM, VIT_L_MARKER_DIM]] = 0.0
    second.weight *= llava.PROJECTOR_GAIN


def demo_profile(**hybrid) -> SinkProfile:
    return SinkProfile(
        name="sinktrain-demo-deepseek_vl" + ("_hybrid" if hybrid else ""), vision_tower="sinktrain-demo-siglip-post-norm",
        vit_dims=[SINK_DIM], vit_layer=-1, criterion="dim_threshold", tau_v=TAU_V, tau_l2=TAU_L2, llm_dims=list(LLM_SINK_DIMS), tau_l=TAU_L,
        hidden_size_vit=VIT_HIDDEN, hidden_size_llm=LLM_HIDDEN, **hybrid,
    )


def save_processor(out_dir: Path, processor_class, images, tokenizer) -> None:
    processor = processor_class(
        image_processor=images, tokenizer=tokenizer, chat_template=chat_template(), num_image_tokens=(IMAGE_SIZE // PATCH) ** 2,
    )
    processor.save_pretrained(out_dir)


def build(out_dir: Path) -> None:
    """Write the tiny DeepSeek-VL: weights, config, tokenizer, processor, sink profile."""
    out_dir.mkdir(parents=True)
    tokenizer = train_tokenizer(out_dir)
    config = DeepseekVLConfig(
        vision_config=vision_config(), text_config=text_config(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=False,
    )
    with reproducible(SEED), torch.no_grad():
        model = DeepseekVLForConditionalGeneration(config).eval()
        plant_v_sinks(model.model.vision_model)
        aligner = model.model.aligner
        open_aligner(aligner.linear1, aligner.linear2)
        plant_l_sinks(aligner.linear1, aligner.linear2, model.model.language_model)
    model.save_pretrained(out_dir)
    save_processor(out_dir, DeepseekVLProcessor, DeepseekVLImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer)
    save_profile(demo_profile(), out_dir / PROFILE_FILE)
