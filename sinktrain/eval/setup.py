"""What every evaluation tool shares: the model / data / generation flags, and loading them.

    parser = argparse.ArgumentParser(...); add_eval_flags(parser)
    args = parser.parse_args(); backbone = load_eval_backbone(args); samples = load_eval_samples(args)

Defaults are the embedded demo: the tiny LLaVA after its short finetune
(``sinktrain.demo.ensure_demo_trained_model``; ``--model demo:qwen2_vl`` for another family's)
and the held-out demo eval shards.
"""

from __future__ import annotations

import argparse

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.eval_set import EvalSample, read_eval_set
from sinktrain.data.chat import FORMATS
from sinktrain.errors import SinkTrainError

EVAL_SET_TOKENS = 8
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_eval_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and eval set")
    group.add_argument("--model", default=None, help="model directory or hub id, or demo:FAMILY (a trained tiny demo model); default: demo (LLaVA)")
    group.add_argument("--sink_profile", default=None, help="sink profile JSON; default: the model's own or a built-in one")
    group.add_argument("--data", default=None, help="eval shards with answers and a 'category' per record; default: the demo eval set")
    group.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    group.add_argument("--template", choices=sorted(FORMATS), default=None, help="default: the model family's (v1 for LLaVA-1.5, qwen2_vl for Qwen-VL)")
    group.add_argument("--min_pixels", type=int, default=None, help="Qwen-VL: resize images to at least this many pixels")
    group.add_argument("--max_pixels", type=int, default=None, help="Qwen-VL: resize images to at most this many pixels")
    group.add_argument("--batch_size", type=int, default=16)
    group.add_argument("--max_new_tokens", type=int, default=None, help=f"greedy tokens per answer; default {EVAL_SET_TOKENS} on an eval set (captions need ~16), a benchmark's own on a benchmark")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    group.add_argument("--precision", choices=sorted(PRECISIONS), default=None, help="default: bf16 on GPU, fp32 on CPU")


def check_eval_flags(args: argparse.Namespace) -> None:
    for name in ("batch_size", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SinkTrainError(f"--{name} {getattr(args, name)}: pass a positive number")


def load_eval_backbone(args: argparse.Namespace) -> Backbone:
    from sinktrain.demo import resolve

    check_eval_flags(args)
    backbone = load_backbone(resolve(args.model, trained=True), args.sink_profile, dtype=eval_dtype(args))
    backbone.check_template(args.template)
    backbone.set_pixel_limits(args.min_pixels, args.max_pixels)
    return place(backbone, args)


def eval_dtype(args: argparse.Namespace) -> torch.dtype:
    return PRECISIONS[args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")]


def place(backbone: Backbone, args: argparse.Namespace) -> Backbone:
    """The whole model on --device in --precision, frozen, in eval mode (again after a module swap)."""
    backbone.model.to(args.device, eval_dtype(args)).eval().requires_grad_(False)
    return backbone


def load_eval_samples(args: argparse.Namespace) -> list[EvalSample]:
    from sinktrain.demo import demo_eval_pattern

    return read_eval_set(args.data or demo_eval_pattern(), args.limit)


def eval_kwargs(args: argparse.Namespace, benchmark: bool = False) -> dict:
    """The keyword arguments of sinktrain.eval.evaluate (or, with ``benchmark``, of
    sinktrain.benchmarks.run_benchmark, where None means each benchmark's own answer length) that these flags set."""
    tokens = args.max_new_tokens if benchmark else args.max_new_tokens or EVAL_SET_TOKENS
    return {"batch_size": args.batch_size, "max_new_tokens": tokens, "template": args.template}
