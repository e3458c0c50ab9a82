"""The embedded tiny DeepSeek-VL-Hybrid: a real ``DeepseekVLHybridForConditionalGeneration`` with
sinks planted in each vision branch.

The tiny DeepSeek-VL (``sinktrain.demo.deepseek_vl``: SigLIP on 64-pixel images, 64 slots, the
same planted SigLIP V-sinks and L-sinks, LLaMA LLM, tokenizer, chat template) plus DeepSeek-VL-7B's
SAM branch in miniature: a 2-layer SAM encoder (width 32, windows of 8, the last layer global) on
256-pixel images of 8-pixel patches, i.e. a 32 x 32 grid, exactly 4x SigLIP's 8 x 8. So the
resampling (``high_res_vision_proj``: interpolate to 4x the SigLIP grid, two stride-2
convolutions) maps SAM grid position (4i, 4j) onto slot (i, j) without blending, and a planted SAM
sink stays one slot. ``high_res_vision_alpha`` is 0.5 (the global path mixed in), the aligner
takes both branches, as DeepSeek-VL-7B's.

SAM's V-sinks sit at other slots than SigLIP's (HIGH_RES_SLOTS, inside the image), so each sink
definition of a profile (``sink_branch``: low_res, high_res, either) picks other slots. The SAM
circuit: a marker channel (brightness plus a bias at the two candidate positions) drives a step in
SAM layer 0 that writes into SAM_SINK_DIM, which nothing else writes; SAM's neck carries that one
channel, and beside it a reference channel that reads nothing, through its convolutions (centre
taps; nothing else reads either) and LayerNorms (same weights for both). A LayerNorm moves a
channel by its token's mean, so the pair differs only where the sink is: the resampling
convolutions write their amplified difference (99% of the reference subtracted) into
HIGH_RES_SINK_DIM of the aligner's second input, ~120 at SAM sinks and under ~1 elsewhere. The
global path (another neck on SAM's last layer) is kept off the pair.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    DeepseekVLHybridConfig,
    DeepseekVLHybridForConditionalGeneration,
    DeepseekVLHybridImageProcessorPil,
    DeepseekVLHybridProcessor,
    SamVisionConfig,
)

from sinktrain.backbones.registry import PROFILE_FILE
from sinktrain.backbones.profiles import save_profile
from sinktrain.demo import deepseek_vl as low
from sinktrain.demo.cache import reproducible
from sinktrain.demo.plant import MARKER_BRIGHTNESS, NON_CANDIDATE_MARKER, plant_step, step_value

HIGH_RES_SIZE, SAM_PATCH, SAM_HIDDEN, SAM_CHANNELS = 256, 8, 32, 24
SAM_GRID = HIGH_RES_SIZE // SAM_PATCH  # 32 = 4 x SigLIP's grid: resampling is exact
SCALE = SAM_GRID // (low.IMAGE_SIZE // low.PATCH)
ALPHA = 0.5

# The SAM circuit (see the module docstring).
HIGH_RES_SLOTS, HIGH_RES_BIAS = (18, 45), (1.5, 0.45)  # slots (2, 2) and (5, 5): no SigLIP candidate
SAM_MARKER_DIM, SAM_SINK_DIM, SAM_NEURONS, SAM_GAIN, SAM_THRESHOLD = 3, 11, (0, 1), 400.0, 0.5
NECK_CHANNEL, REFERENCE_CHANNEL, PROJ_CHANNEL, HIGH_RES_SINK_DIM = 5, 6, 7, 50
PROJ_GAIN = 5.0  # per resampling convolution
REFERENCE_SHARE = 0.99  # not all of the reference is subtracted: ordinary tokens keep a spread of small values
TAU_HIGH_RES = 40.0


def sam_position(slot: int) -> tuple[int, int]:
    side = low.IMAGE_SIZE // low.PATCH
    return SCALE * (slot // side), SCALE * (slot % side)


def plant_sam_marker(encoder) -> None:
    """SAM_MARKER_DIM: brightness plus a bias at each SAM sink's grid position; SAM_SINK_DIM: nothing."""
    weight = encoder.patch_embed.projection.weight
    weight[SAM_MARKER_DIM] = MARKER_BRIGHTNESS / weight[0].numel()
    encoder.patch_embed.projection.bias[SAM_MARKER_DIM] = 0.0
    encoder.pos_embed[..., SAM_MARKER_DIM] = NON_CANDIDATE_MARKER
    for slot, bias in zip(HIGH_RES_SLOTS, HIGH_RES_BIAS):
        row, column = sam_position(slot)
        encoder.pos_embed[0, row, column, SAM_MARKER_DIM] = bias
    weight[SAM_SINK_DIM] = 0.0
    encoder.patch_embed.projection.bias[SAM_SINK_DIM] = 0.0
    encoder.pos_embed[..., SAM_SINK_DIM] = 0.0
    for layer in encoder.layers:
        for writer in (layer.attn.proj, layer.mlp.lin2):
            writer.weight[SAM_SINK_DIM] = 0.0
            writer.bias[SAM_SINK_DIM] = 0.0


def route(conv, target: int, taps: dict[int, float]) -> None:
    """Output channel ``target`` of a convolution is the sum of gain x input channel at the
    kernel's centre over ``taps`` {channel: gain}, and no other output reads those channels."""
    centre = conv.weight.shape[-1] // 2
    conv.weight[:, list(taps)] = 0.0
    conv.weight[target] = 0.0
    for source, gain in taps.items():
        conv.weight[target, source, centre, centre] = gain


def same_norm(norm, channels) -> None:
    norm.weight[list(channels)] = 1.0
    norm.bias[list(channels)] = 0.0


def plant_sam_sinks(model) -> None:
    """The marker and step in SAM, then the sink channel and its zero reference through the necks
    and the resampling (see the module docstring)."""
    encoder = model.model.high_res_vision_model.vision_encoder
    plant_sam_marker(encoder)
    mlp = encoder.layers[0].mlp
    plant_step(mlp.lin1, mlp.lin2, SAM_NEURONS, SAM_MARKER_DIM, SAM_SINK_DIM, SAM_GAIN, SAM_THRESHOLD)
    neck, pair = encoder.neck, (NECK_CHANNEL, REFERENCE_CHANNEL)
    route(neck.conv1, NECK_CHANNEL, {SAM_SINK_DIM: 1.0})
    route(neck.conv1, REFERENCE_CHANNEL, {})
    for channel in pair:
        route(neck.conv2, channel, {channel: 1.0})
    for norm in (neck.layer_norm1, neck.layer_norm2):
        same_norm(norm, pair)
    proj = model.model.high_res_vision_proj
    route(proj.conv1, PROJ_CHANNEL, {NECK_CHANNEL: PROJ_GAIN, REFERENCE_CHANNEL: -REFERENCE_SHARE * PROJ_GAIN})
    route(proj.conv2, HIGH_RES_SINK_DIM, {PROJ_CHANNEL: PROJ_GAIN})
    glob = model.model.high_res_vision_neck  # the global path: blind to the sink, silent in the pair
    glob.conv1.weight[:, SAM_SINK_DIM] = 0.0
    glob.layer_norm2.weight[list(pair)] = 0.0
    glob.layer_norm2.bias[list(pair)] = 0.0
    model.model.high_res_vision_alpha.fill_(ALPHA)


def planted_sam_value(mlp, lin1_out: torch.Tensor) -> torch.Tensor:
    """What SAM's planted step writes into SAM_SINK_DIM, from layer 0's lin1 output (ground truth for tests)."""
    return step_value(mlp.act, lin1_out, SAM_NEURONS, SAM_GAIN)


def open_hybrid_aligner(aligner) -> tuple[int, ...]:
    """Blind to the planted channels of both branches at 4x scale; the L-sink step on SigLIP's half
    (the concatenation puts SAM's half first, so SigLIP's neurons are proj's columns from D / 2 on)."""
    half = aligner.vision_proj.out_features
    low.open_aligner(aligner.vision_proj, aligner.proj)
    aligner.high_res_vision_proj.weight[:, HIGH_RES_SINK_DIM] = 0.0
    return tuple(half + neuron for neuron in low.ALIGNER_NEURONS)


def demo_config(tokenizer) -> DeepseekVLHybridConfig:
    sam = SamVisionConfig(
        hidden_size=SAM_HIDDEN, output_channels=SAM_CHANNELS, num_hidden_layers=2, num_attention_heads=2, mlp_dim=2 * SAM_HIDDEN,
        image_size=HIGH_RES_SIZE, patch_size=SAM_PATCH, window_size=8, global_attn_indexes=[1], initializer_range=0.02,
    )
    return DeepseekVLHybridConfig(
        vision_config=low.vision_config(), high_res_vision_config=sam, text_config=low.text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(low.IMAGE_TOKEN), tie_word_embeddings=False,
    )


def demo_profile():
    return low.demo_profile(high_res_dims=[HIGH_RES_SINK_DIM], tau_high_res=TAU_HIGH_RES, hidden_size_high_res=4 * SAM_CHANNELS)


def build(out_dir: Path) -> None:
    """Write the tiny DeepSeek-VL-Hybrid: weights, config, tokenizer, processor, sink profile."""
    out_dir.mkdir(parents=True)
    tokenizer = low.train_tokenizer(out_dir)
    with reproducible(low.SEED), torch.no_grad():
        model = DeepseekVLHybridForConditionalGeneration(demo_config(tokenizer)).eval()
        low.plant_v_sinks(model.model.vision_model)
        plant_sam_sinks(model)
        aligner = model.model.aligner
        columns = open_hybrid_aligner(aligner)
        low.plant_l_sinks(aligner.vision_proj, aligner.proj, model.model.language_model, columns)
    model.save_pretrained(out_dir)
    images = DeepseekVLHybridImageProcessorPil(
        size={"height": low.IMAGE_SIZE, "width": low.IMAGE_SIZE}, high_res_size={"height": HIGH_RES_SIZE, "width": HIGH_RES_SIZE},
    )
    low.save_processor(out_dir, DeepseekVLHybridProcessor, images, tokenizer)
    save_profile(demo_profile(), out_dir / PROFILE_FILE)
