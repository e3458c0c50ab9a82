"""The embedded default: a tiny LLaVA-1.5 and synthetic-scene shards, built once and cached.

``python -m sinktrain.demo`` builds both and prints where they are. The tiny backbone is a real
``LlavaForConditionalGeneration`` with LLaVA-1.5's shape in miniature (CLIP-style ViT read at
layer -2 with CLS dropped, Linear-GELU-Linear projector, LLaMA-style LLM, sentencepiece tokenizer
trained on the demo vocabulary), saved as a normal Hugging Face model directory so
``from_pretrained`` loads it like ``llava-hf/llava-1.5-7b-hf``. Weights are random from a fixed
seed, plus one planted massive-activation circuit in the ViT (see ``plant_v_sinks``) so that
1-4 patches per image are genuine V-sinks under the dimension-threshold rule.

The cache lives in ``$SINKTRAIN_CACHE`` (default ``~/.cache/sinktrain``); every artefact is
written to a temporary sibling and renamed into place, so an interrupted build is simply redone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from sinktrain.backbones.profiles import SinkProfile, save_profile
from sinktrain.backbones.registry import PROFILE_FILE

DEMO_VERSION = 4  # bump when the demo model or data change, so stale caches are rebuilt
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


def cache_dir() -> Path:
    return Path(os.environ.get("SINKTRAIN_CACHE", Path.home() / ".cache" / "sinktrain"))


def demo_model_dir() -> Path:
    return cache_dir() / f"demo-llava-v{DEMO_VERSION}"


def demo_shard_dir() -> Path:
    return cache_dir() / f"demo-shards-v{DEMO_VERSION}"


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
        tau_v=TAU_V,
        llm_dims=list(LLM_SINK_DIMS),
        tau_l=TAU_L,
        hidden_size_vit=VIT_HIDDEN,
        hidden_size_llm=LLM_HIDDEN,
    )


def train_tokenizer(out_dir: Path) -> LlamaTokenizer:
    """A LLaMA-style sentencepiece BPE tokenizer (byte fallback) trained on the demo vocabulary."""
    import sentencepiece as spm

    from sinktrain.data.scenes import vocabulary_sentences
    from sinktrain.data.templates import VICUNA_V1_SYSTEM

    sentences = vocabulary_sentences() + [VICUNA_V1_SYSTEM, "USER: ASSISTANT:"]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 4),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=600, model_type="bpe", byte_fallback=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    tokenizer = LlamaTokenizer.from_pretrained(str(out_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    (out_dir / "tokenizer.vocab").unlink()  # a human-readable listing, not needed to load
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
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(demo_config(tokenizer)).eval()
    plant_v_sinks(model.model.vision_tower)
    open_projector(model)
    plant_l_sinks(model)
    model.save_pretrained(out_dir)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    processor.save_pretrained(out_dir)
    save_profile(demo_profile(), out_dir / PROFILE_FILE)


def build_once(target: Path, build) -> Path:
    """Run ``build(tmp)`` into a temporary sibling and rename it to ``target``; skip if present."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp / "out")
        try:
            os.replace(tmp / "out", target)
        except OSError:  # another process (rank) finished first: its copy is identical
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_demo_model() -> Path:
    return build_once(demo_model_dir(), build_demo_model)


DEMO_SAMPLES, DEMO_SHARDS = 2400, 8
PRETRAIN_STEPS, PRETRAIN_BATCH, PRETRAIN_LR, PRETRAIN_WARMUP = 450, 16, 2e-3, 22


def demo_trained_model_dir() -> Path:
    return cache_dir() / f"demo-llava-trained-v{DEMO_VERSION}"


def pretrain_demo_model(out_dir: Path) -> None:
    """The tiny LLaVA after a short LLaVA-style finetune (ViT frozen) on the demo shards.

    Methods that act on a trained model (LSG gates, evaluation, the oracle sweep) start from it;
    the random demo model is the starting point of finetuning. After 450 steps it has learned the
    answer formats and reads colour and size from the image (shape and count only partly).
    """
    from torch.utils.data import DataLoader

    from sinktrain.backbones.registry import load_backbone
    from sinktrain.data.collate import Collator
    from sinktrain.data.encode import SampleEncoder
    from sinktrain.data.stream import ShardStream, expand_shards

    backbone = load_backbone(str(ensure_demo_model()))
    backbone.freeze_vision()
    encoder = SampleEncoder(backbone.tokenizer, backbone.preprocess_images, "v1", backbone.image_token_id, backbone.num_image_tokens, 512)
    stream = ShardStream(expand_shards(demo_data_pattern()), encoder, rank=0, world_size=1, num_workers=0, seed=SEED)
    batches = iter(DataLoader(stream, batch_size=PRETRAIN_BATCH, collate_fn=Collator(backbone.tokenizer.pad_token_id)))
    optimizer = torch.optim.AdamW([p for p in backbone.model.parameters() if p.requires_grad], lr=PRETRAIN_LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / PRETRAIN_WARMUP) * (1.0 - step / PRETRAIN_STEPS)
    )
    backbone.model.train()
    for _ in range(PRETRAIN_STEPS):
        loss = backbone.forward(next(batches)[0]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    backbone.model.eval().save_pretrained(out_dir)
    backbone.processor.save_pretrained(out_dir)
    save_profile(backbone.sink_profile, out_dir / PROFILE_FILE)


def ensure_demo_trained_model() -> Path:
    return build_once(demo_trained_model_dir(), pretrain_demo_model)


def ensure_demo_shards() -> Path:
    """Write the demo shards once (write_demo_shards itself swaps a finished directory in)."""
    from sinktrain.data.shards import write_demo_shards

    target = demo_shard_dir()
    if not target.is_dir():
        write_demo_shards(str(target), DEMO_SAMPLES, DEMO_SHARDS, SEED)
    return target


EVAL_SAMPLES, EVAL_SHARDS, EVAL_SEED = 400, 2, 1  # held out: another seed than the training shards


def demo_eval_dir() -> Path:
    return cache_dir() / f"demo-eval-v{DEMO_VERSION}"


def demo_eval_pattern() -> str:
    """Held-out demo shards with answers and task categories, for tools/evaluate.py."""
    from sinktrain.data.shards import write_demo_shards

    target = demo_eval_dir()
    if not target.is_dir():
        write_demo_shards(str(target), EVAL_SAMPLES, EVAL_SHARDS, EVAL_SEED)
    return str(target / ("demo-{000000..%06d}.tar" % (EVAL_SHARDS - 1)))


def demo_data_pattern() -> str:
    return str(ensure_demo_shards() / ("demo-{000000..%06d}.tar" % (DEMO_SHARDS - 1)))


if __name__ == "__main__":
    print("demo model: ", ensure_demo_model())
    print("trained:    ", ensure_demo_trained_model())
    print("demo shards:", demo_data_pattern())
