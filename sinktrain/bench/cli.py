"""The flags and start-up the model benchmarks share (tools/bench_overhead.py, tools/bench_diysink.py):
the in-memory model's shape, the rounds, threads and allocator."""

from __future__ import annotations

import argparse

import torch
import transformers

from sinktrain.allocator import keep_freed_memory
from sinktrain.log import quiet_third_party


def add_model_flags(parser: argparse.ArgumentParser, families) -> None:
    parser.add_argument("--family", default="llava", choices=sorted(families), help="model family (default llava)")
    parser.add_argument("--hidden", type=int, default=1024, help="LLM hidden size")
    parser.add_argument("--layers", type=int, default=8, help="LLM decoder layers")
    parser.add_argument("--heads", type=int, default=None, help="LLM attention heads (default: llava 16, qwen2_vl hidden / 128)")
    parser.add_argument("--kv_heads", type=int, default=None, help="LLM KV heads (default: llava = heads, qwen2_vl ~ heads / 7)")
    parser.add_argument("--intermediate", type=int, default=None, help="LLM MLP size (default: llava 2.75 x hidden, qwen2_vl 18944/3584 x hidden)")
    parser.add_argument("--vocab", type=int, default=32000, help="LLM vocabulary (at least the tokenizer's)")
    parser.add_argument("--visual_tokens", type=int, default=576, help="slots per image (llava: a square, 576 = 24 x 24 -> 336 px)")
    parser.add_argument("--text_tokens", type=int, default=64, help="text tokens per sample, chat template included (at least the template's)")
    parser.add_argument("--batch", type=int, default=1, help="samples per batch (qwen2_vl: image aspect ratios differ per sample)")


def add_run_flags(parser: argparse.ArgumentParser, warmup_help: str = "untimed rounds first") -> None:
    parser.add_argument("--repeats", type=int, default=6, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help=warmup_help)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default 0: leave torch's default)")
    parser.add_argument("--default_allocator", action="store_true", help="leave glibc's malloc settings alone (noisier)")
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")


def start(args: argparse.Namespace) -> argparse.Namespace:
    """Threads, the pinned allocator (unless --default_allocator) and a quiet console, before any model is built."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.pinned_allocator = False if args.default_allocator else keep_freed_memory()
    transformers.logging.set_verbosity_error()
    quiet_third_party()
    return args
