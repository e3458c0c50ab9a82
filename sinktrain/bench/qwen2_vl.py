"""The overhead benchmark's Qwen2-VL: a ``Qwen2VLForConditionalGeneration`` built in memory from configs.

The LLM has Qwen2-7B's shape scaled to ``--hidden`` x ``--layers``: head dim 128 (``--heads``
default hidden / 128), grouped-query attention at Qwen2-7B's 7 query heads per KV head (the
divisor of --heads nearest to that), SwiGLU MLP at Qwen2-7B's 18944 / 3584 of hidden, RMSNorm
eps 1e-6, rope theta 1e6, untied output layer, and M-RoPE with ``mrope_section`` scaled from
Qwen2-7B's [16, 24, 24] to the head dim (t a quarter of the rotary pairs, h and w the rest).
The vocabulary is ``--vocab`` (default 32000, not Qwen's 152064: at this width a 152k output layer
would be half of the model's compute, against 7% at 7B, and dilute every ratio).

The ViT is small (256 wide, 2 blocks, 4 heads, patch 14, temporal patch 2, 2x2 merger: one slot
per 28 x 28 pixels) with dynamic resolution: the benchmark images have aspect ratios 1, 4:3, 3:4
and 16:9 in turn, each sized to about ``--visual_tokens`` slots (576 = 24 x 24 at 336 x 336 px,
567 = 27 x 21 at 4:3). V-sinks are read on the merger's input (the last block's output).
Tokenizer: the demo's byte-level BPE with Qwen's specials (sinktrain.demo.qwen2_vl); processor as
the demo builds it (``ImageTextProcessor`` on ``Qwen2VLImageProcessorPil``: Qwen2VLProcessor
itself cannot be built without torchvision).
"""

from __future__ import annotations

import math
from pathlib import Path

from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

from sinktrain.backbones.processor import ImageTextProcessor
from sinktrain.backbones.qwen2_vl import MERGER_INPUT, Qwen2VLBackbone
from sinktrain.demo.qwen2_vl import train_tokenizer

NAME = "Qwen2-VL"
BACKBONE = Qwen2VLBackbone
PATCH, MERGE, TEMPORAL = 14, 2, 2
VIT_HIDDEN, VIT_LAYERS, VIT_HEADS, VIT_MLP_RATIO = 256, 2, 4, 4
VIT_LAYER = MERGER_INPUT
# Qwen2-7B (the LLM of Qwen2-VL-7B): hidden 3584, 28 heads of 128, 4 KV heads, MLP 18944.
HEAD_DIM, QUERIES_PER_KV, MLP_RATIO = 128, 7, 18944 / 3584
ROPE_THETA, RMS_EPS = 1_000_000.0, 1e-6
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9)  # width / height of the benchmark images, in turn
MIN_PIXELS = 4 * (PATCH * MERGE) ** 2


def nearest_divisor(number: int, target: float) -> int:
    return min((d for d in range(1, number + 1) if number % d == 0), key=lambda d: (abs(d - target), -d))


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2-VL's [16, 24, 24] (of 64 rotary pairs at head dim 128), scaled to head_dim // 2 pairs."""
    pairs = head_dim // 2
    temporal = pairs // 4
    height = (pairs - temporal) // 2
    return [temporal, height, pairs - temporal - height]


def resolve_args(args, error) -> None:
    """Family defaults and checks for the shared command line (``error``: argparse's)."""
    args.heads = args.heads or max(1, args.hidden // HEAD_DIM)
    if args.hidden % args.heads or (args.hidden // args.heads) % 2:
        error(f"--hidden {args.hidden} is not {args.heads} heads of an even head dim; pass --heads")
    args.kv_heads = args.kv_heads or nearest_divisor(args.heads, args.heads / QUERIES_PER_KV)
    if args.heads % args.kv_heads:
        error(f"--kv_heads {args.kv_heads} does not divide --heads {args.heads}")
    args.intermediate = args.intermediate or int(round(MLP_RATIO * args.hidden))
    args.mrope_section = mrope_section(args.hidden // args.heads)
    args.image_grids = [grid(args.visual_tokens, aspect) for aspect in ASPECTS]


def grid(slots: int, aspect: float) -> tuple[int, int]:
    """(rows, columns) of slots, about ``slots`` of them at width / height ``aspect``."""
    rows = max(1, round(math.sqrt(slots / aspect)))
    return rows, max(1, round(slots / rows))


def image_size(args, index: int) -> tuple[int, int]:
    """(width, height) of the index-th benchmark image: whole 28-pixel slots, so the processor keeps it."""
    rows, columns = args.image_grids[index % len(args.image_grids)]
    return columns * PATCH * MERGE, rows * PATCH * MERGE


def build_config(args, tokenizer) -> Qwen2VLConfig:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    most_slots = max(rows * columns for rows, columns in args.image_grids)
    text = dict(
        vocab_size=max(args.vocab, len(tokenizer)), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(4096, 2 * (most_slots + args.text_tokens + args.new_tokens)), rms_norm_eps=RMS_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": args.mrope_section},
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        depth=VIT_LAYERS, embed_dim=VIT_HIDDEN, hidden_size=args.hidden, num_heads=VIT_HEADS, mlp_ratio=VIT_MLP_RATIO,
        hidden_act="quick_gelu", in_channels=3, patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL,
    )
    return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)


def build(args, workdir: Path):
    """(model, processor): random weights from torch's current seed."""
    tokenizer = train_tokenizer()
    config = build_config(args, tokenizer)
    model = Qwen2VLForConditionalGeneration._from_config(config, attn_implementation=args.attn).eval()
    most_pixels = max(rows * columns for rows, columns in args.image_grids) * (PATCH * MERGE) ** 2
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS, max_pixels=max(2 * most_pixels, MIN_PIXELS), patch_size=PATCH, merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
    )
    return model, ImageTextProcessor(tokenizer, image_processor)


def describe(args, model) -> str:
    text = model.config.text_config
    grids = ", ".join(f"{columns}x{rows}" for rows, columns in args.image_grids[: min(len(args.image_grids), args.batch)])
    return (
        f"LLM d={args.hidden} x {args.layers} layers, {args.heads} heads ({args.kv_heads} KV), MLP {args.intermediate}, "
        f"mrope {args.mrope_section}, vocab {text.vocab_size}; ViT {VIT_HIDDEN} x {VIT_LAYERS}, patch {PATCH}, "
        f"{MERGE}x{MERGE} merger; images of {grids} slots"
    )
