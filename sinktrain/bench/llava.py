"""The overhead benchmark's LLaVA: a ``LlavaForConditionalGeneration`` built in memory from configs.

LLaMA-style LLM (``--hidden`` x ``--layers``, ``--heads`` = KV heads, MLP 2.75 x hidden by
default, ``--vocab``) and a small CLIP ViT (256 wide, 2 layers, patch 14) read at layer -2 with
CLS dropped, as LLaVA-1.5; the image side is chosen so one image fills ``--visual_tokens`` slots
(576 = 24 x 24 -> 336 px). Tokenizer: the demo's sentencepiece BPE (sinktrain.demo.llava); the
processor is built as the demo builds it (LlavaProcessor on the PIL CLIP image processor).
"""

from __future__ import annotations

import math
from pathlib import Path

from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from sinktrain.backbones.llava import LlavaBackbone
from sinktrain.demo.llava import train_tokenizer

NAME = "LLaVA"
BACKBONE = LlavaBackbone
PATCH = 14
VIT_HIDDEN, VIT_LAYERS, VIT_HEADS = 256, 2, 4
VIT_LAYER = -2  # the hidden state the projector reads (where V-sinks are read)


def resolve_args(args, error) -> None:
    """Family defaults and checks for the shared command line (``error``: argparse's)."""
    side = math.isqrt(args.visual_tokens)
    if side * side != args.visual_tokens:
        error(f"--visual_tokens {args.visual_tokens} is not a square (LLaVA's image is a square grid: 576 = 24 x 24)")
    args.image_size = side * PATCH
    args.heads = args.heads or 16
    args.kv_heads = args.kv_heads or args.heads
    args.intermediate = args.intermediate or int(round(2.75 * args.hidden))


def image_size(args, index: int) -> tuple[int, int]:
    """(width, height) of the index-th benchmark image: the processor's own square."""
    return args.image_size, args.image_size


def build_config(args, tokenizer) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=VIT_HIDDEN, intermediate_size=4 * VIT_HIDDEN, num_hidden_layers=VIT_LAYERS,
        num_attention_heads=VIT_HEADS, image_size=args.image_size, patch_size=PATCH, hidden_act="quick_gelu",
        projection_dim=VIT_HIDDEN,
    )
    text = LlamaConfig(
        hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=max(args.vocab, len(tokenizer)),
        max_position_embeddings=max(2048, 2 * (args.visual_tokens + args.text_tokens + args.new_tokens)),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=VIT_LAYER, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )


def build(args, workdir: Path):
    """(model, processor): random weights from torch's current seed."""
    tokenizer = train_tokenizer(workdir)
    config = build_config(args, tokenizer)
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation=args.attn).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": args.image_size}, crop_size={"height": args.image_size, "width": args.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return model, processor


def describe(args, model) -> str:
    text = model.config.text_config
    return (
        f"LLM d={args.hidden} x {args.layers} layers, {args.heads} heads ({args.kv_heads} KV), MLP {args.intermediate}, "
        f"vocab {text.vocab_size}; CLIP ViT {VIT_HIDDEN} x {VIT_LAYERS}, {args.image_size}px -> {args.visual_tokens} slots per image"
    )
