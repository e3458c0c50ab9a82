"""The embedded tiny LLaVA-1.5: a real ``LlavaForConditionalGeneration`` with planted sinks.

LLaVA-1.5's shape in miniature (CLIP-style ViT read at layer -2 with CLS dropped,
Linear-GELU-Linear projector, LLaMA-style LLM, sentencepiece tokenizer trained on the demo
vocabulary), saved as a normal Hugging Face model directory so ``from_pretrained`` loads it like
``llava-hf/llava-1.5-7b-hf``. Weights are random from a fixed seed, plus two planted circuits:
massive activations in the ViT (``plant_v_sinks``: 1-4 genuine V-sinks per image under the
dimension-threshold rule) and in the LLM (``plant_l_sinks``: L-sinks from layer 2 on).
``python -m sinktrain.demo`` builds it (and the other demo artefacts) into the cache.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from sinktrain.backbones.profiles import SinkProfile, save_profile
from sinktrain.backbones.registry import PROFILE_FILE
from sinktrain.demo.cache import reproducible

SEED = 0
IMAGE_SIZE, PATCH_SIZE = 64, 8  # 8 x 8 = 64 visual tokens (LLaVA-1.5: 336 / 14 -> 576)
VIT_HIDDEN, VIT_LAYERS = 64, 4
LLM_HIDDEN, LLM_LAYERS = 128, 4

# The planted V-sink circuit. In CLIP ViT-L/14 channel 650 carries the massive activations;
# here channel SINK_DIM does. A marker channel carries "sink propensity" (a per-position bias
# plus the patch's brightness); one MLP neuron of layer SINK_LAYER fires when the marker is high
# and writes SINK_GAIN into SINK_DIM. The residual stream carries that value up to layer -2,
# where LLaVA reads the features.
SINK_DIM, MARKER_DIM, SINK_NEURON, SINK_LAYER = 37, 5, 0, 1
CANDIDATE_PATCHES = (0, 7, 56, 63)  # the four corner patches: background in most scenes
# Marker bias per candidate, against half the patch brightness (CLIP-normalised brightness: black
# -1.8, grey 0.1, white 1.9): corner 0 always fires, corner 7 from grey up, corners 56 and 63 on
# white only, so a plain black / grey / white background gives 1 / 2 / 4 sinks and objects in a
# corner change that. Markers stay small: every patch carries them, and larger ones would dominate
# the ViT's LayerNorms and squeeze out the colour and size content the LLM has to learn to read.
MARKER_BRIGHTNESS = 0.5
CANDIDATE_BIAS = (1.5, 0.45, -0.5, -0.3)
NEURON_GAIN = 32.0  # a steep neuron: candidates are clearly on or off, rarely in between
SINK_GAIN = 20.0  # sinks reach ~100-1000 in SINK_DIM; ordinary tokens stay below ~3 (rarely ~30)
TAU_V = 60.0  # inside the (nearly) empty gap of the log-magnitude histogram on demo data
# DIYSink's L2-norm rule: V-sinks have norms >= ~98, every other token <= ~44 on demo scenes, so
# the two rules flag the same tokens (tests/backbones/test_sink_rules.py)
TAU_L2 = 65.0
NON_CANDIDATE_MARKER = -2.0  # below every candidate, on any background

# The planted L-sink circuit (LLM-emerged sinks, like LLaMA-2's channels 2533 / 1415). A second
# ViT marker channel (position bias + brightness, as above) marks four edge patches; where it is
# high, one projector neuron lifts LLM channel L_MARKER_DIM, and an MLP neuron of LLM layer
# L_SINK_LAYER reads that channel and writes massive values into LLM_SINK_DIMS, from layer 2 on.
L_CANDIDATE_PATCHES = (3, 24, 39, 60)  # edge midpoints, never V-sink candidates
L_CANDIDATE_BIAS = CANDIDATE_BIAS
VIT_L_MARKER_DIM, L_MARKER_THRESHOLD = 9, 0.0
L_MARKER_DIM, PROJECTOR_NEURON, LLM_NEURON, L_SINK_LAYER = 7, 0, 0, 1
L_MARKER_OFFSET = -2.0
LLM_SINK_DIMS = (93, 17)  # primary first, as profiles list them
L_NEURON_GAIN = 2.0
TAU_L = 5.0  # after weightless RMSNorm; the ceiling is sqrt(128 / 2) = 8 for two massive dims
PROJECTOR_GAIN = 4.0  # see open_projector


def plant_v_sinks(vision_tower) -> None:
    """Plant the massive-activation circuit described above into a CLIP vision tower's weights."""
    embeddings = vision_tower.embeddings
    mlp = vision_tower.encoder.layers[SINK_LAYER].mlp
    patch_pixels = embeddings.patch_embedding.weight[MARKER_DIM].numel()
    with torch.no_grad():
        for dim, patches, biases in ((MARKER_DIM, CANDIDATE_PATCHES, CANDIDATE_BIAS), (VIT_L_MARKER_DIM, L_CANDIDATE_PATCHES, L_CANDIDATE_BIAS)):
            embeddings.patch_embedding.weight[dim] = MARKER_BRIGHTNESS / patch_pixels  # mean brightness
            embeddings.position_embedding.weight[:, dim] = NON_CANDIDATE_MARKER
            for patch, bias in zip(patches, biases):
                embeddings.position_embedding.weight[patch + 1, dim] = bias  # +1: CLS is position 0
        mlp.fc1.weight[SINK_NEURON] = 0.0
        mlp.fc1.weight[SINK_NEURON, MARKER_DIM] = NEURON_GAIN
        mlp.fc1.bias[SINK_NEURON] = 0.0
        mlp.fc2.weight[:, SINK_NEURON] = 0.0
        mlp.fc2.weight[SINK_DIM, SINK_NEURON] = SINK_GAIN


def open_projector(model) -> None:
    """Start the projector blind to the planted ViT channels and at 4x the default output scale.

    The planted channels are huge (sinks) or shared by every patch (markers); read at init they
    swamp the colour and size content, and at the default scale the visual tokens drown in the
    first attention layers' outputs. Either way the 4-layer LLM never learned to read the image in
    a few hundred finetune steps; this way it does. Finetuning still learns to read the planted
    channels (gradients reach those weights); the L-sink circuit, planted after this, reads one.
    """
    projector = model.model.multi_modal_projector
    with torch.no_grad():
        projector.linear_1.weight[:, [SINK_DIM, MARKER_DIM, VIT_L_MARKER_DIM]] = 0.0
        projector.linear_2.weight *= PROJECTOR_GAIN


def plant_l_sinks(model) -> None:
    """Plant the L-sink circuit described above into the projector and the LLM."""
    projector = model.model.multi_modal_projector
    mlp = model.model.language_model.layers[L_SINK_LAYER].mlp
    with torch.no_grad():
        projector.linear_1.weight[PROJECTOR_NEURON] = 0.0
        projector.linear_1.weight[PROJECTOR_NEURON, VIT_L_MARKER_DIM] = 4.0
        projector.linear_1.bias[PROJECTOR_NEURON] = -4.0 * L_MARKER_THRESHOLD
        projector.linear_2.weight[:, PROJECTOR_NEURON] = 0.0
        projector.linear_2.weight[L_MARKER_DIM, PROJECTOR_NEURON] = 1.0
        # Other visual tokens: clearly negative, so the LLM neuron stays off; an offset small next
        # to the content (see open_projector), or all visual tokens look alike to the LLM.
        projector.linear_2.bias[L_MARKER_DIM] = L_MARKER_OFFSET
        for proj in (mlp.gate_proj, mlp.up_proj):  # up = gate: the neuron outputs silu(g) * g
            proj.weight[LLM_NEURON] = 0.0
            proj.weight[LLM_NEURON, L_MARKER_DIM] = L_NEURON_GAIN
        mlp.down_proj.weight[:, LLM_NEURON] = 0.0
        mlp.down_proj.weight[list(LLM_SINK_DIMS), LLM_NEURON] = 1.0


def demo_profile() -> SinkProfile:
    return SinkProfile(
        name="sinktrain-demo",
        vision_tower="sinktrain-demo-vit",
        vit_dims=[SINK_DIM],
        vit_layer=-2,
        criterion="dim_threshold",
        tau_v=TAU_V, tau_l2=TAU_L2,
        llm_dims=list(LLM_SINK_DIMS),
        tau_l=TAU_L,
        hidden_size_vit=VIT_HIDDEN,
        hidden_size_llm=LLM_HIDDEN,
    )


def train_tokenizer(out_dir: Path, prompts: tuple[str, ...] | None = None) -> LlamaTokenizer:
    """A LLaMA-style sentencepiece BPE tokenizer (byte fallback) trained on the demo vocabulary and
    the chat format's fixed text (``prompts``; default LLaVA-1.5's v1), with ``<image>``."""
    import sentencepiece as spm

    from sinktrain.data.scenes import vocabulary_sentences
    from sinktrain.data.chat.formats import VICUNA_V1_SYSTEM

    sentences = vocabulary_sentences() + list(prompts or (VICUNA_V1_SYSTEM, "USER: ASSISTANT:"))
    model = io.BytesIO()  # in memory: a model_prefix path would be recorded in the file
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 4), model_writer=model,
        vocab_size=600, model_type="bpe", byte_fallback=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(str(out_dir), add_bos_token=True)  # as LLaMA's: prompts start with <s>
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    return tokenizer


def demo_config(tokenizer) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=VIT_HIDDEN, intermediate_size=2 * VIT_HIDDEN, num_hidden_layers=VIT_LAYERS,
        num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_act="gelu",
        projection_dim=VIT_HIDDEN,
    )
    text = LlamaConfig(
        hidden_size=LLM_HIDDEN, intermediate_size=2 * LLM_HIDDEN, num_hidden_layers=LLM_LAYERS,
        num_attention_heads=4, num_key_value_heads=4, vocab_size=len(tokenizer),
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )


def build_demo_model(out_dir: Path) -> None:
    """Write the tiny LLaVA (weights, config, tokenizer, processor, sink profile) to out_dir."""
    out_dir.mkdir(parents=True)
    tokenizer = train_tokenizer(out_dir)
    with reproducible(SEED):
        model = LlavaForConditionalGeneration(demo_config(tokenizer)).eval()
        plant_v_sinks(model.model.vision_tower)
        open_projector(model)
        plant_l_sinks(model)
    model.save_pretrained(out_dir)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    processor.save_pretrained(out_dir)
    save_profile(demo_profile(), out_dir / PROFILE_FILE)
