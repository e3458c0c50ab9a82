"""The flags every recipe takes, and which of them the user actually typed.

Recipe flags say what a run chooses (model, data, steps, output); DeepSpeed settings live in the
ds_config, whose "auto" values are filled from these flags (see sinktrain.train.ds_config).
"""

from __future__ import annotations

import argparse
import sys

from sinktrain.backbones.profiles import SINK_RULES
from sinktrain.data.chat import FORMATS, OVERFLOW_POLICIES
from sinktrain.demo import demo_name
from sinktrain.train.ds_config import PRECISIONS

# Flags whose defaults differ on the embedded demo: the tiny random model needs a much higher lr
# than LLaVA-7B finetuning (2e-5) to visibly learn within a minute.
DEMO_DEFAULTS = {"lr": 2e-3, "max_steps": 100, "per_device_batch_size": 8, "warmup_ratio": 0.05, "save_every": 50}


def common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("what to run")
    run.add_argument("--model", default=None, help="model directory or hub id in transformers format, or demo:FAMILY (llava, qwen2_vl, qwen2_5_vl, llava_onevision, deepseek_vl, deepseek_vl_hybrid); default: demo (the tiny LLaVA)")
    run.add_argument("--data", default=None, help="WebDataset shards, e.g. 'shards/{000000..000099}.tar'; default: the demo shards")
    run.add_argument("--sink_profile", default=None, help="sink profile JSON (tools/find_sink_dims.py writes one); default: the model's own or a built-in one")
    run.add_argument("--output_dir", default=None, help="checkpoints, logs and TensorBoard; default: a new folder under runs/")
    run.add_argument("--resume", default=None, help="'auto' continues from the latest checkpoint in --output_dir; or a checkpoint directory")
    run.add_argument("--ds_config", default="ds_configs/zero3.json", help="DeepSpeed config (a path, or zero2 / zero3 / zero3_offload)")
    run.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher

    opt = parser.add_argument_group("optimisation (fills the ds_config's \"auto\" values)")
    opt.add_argument("--max_steps", type=int, default=None, help="optimizer steps; default: --num_epochs over the data")
    opt.add_argument("--num_epochs", type=float, default=1.0, help="used when --max_steps is not given; epochs count the samples in the shards (remote ones are read once, then cached)")
    opt.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (LLaVA-1.5 stage 2: 2e-5)")
    opt.add_argument("--per_device_batch_size", type=int, default=16, help="samples per rank per micro step")
    opt.add_argument("--grad_accum", type=int, default=1, help="micro steps per optimizer step")
    opt.add_argument("--weight_decay", type=float, default=0.0)
    opt.add_argument("--warmup_ratio", type=float, default=0.03)
    opt.add_argument("--max_grad_norm", type=float, default=1.0)
    opt.add_argument("--precision", choices=PRECISIONS, default=None, help="default: bf16 on GPU, fp32 on CPU")
    opt.add_argument("--seed", type=int, default=0)

    data = parser.add_argument_group("data")
    data.add_argument("--template", choices=sorted(FORMATS), default=None, help="chat format; default: the model family's (v1 for LLaVA-1.5, qwen2_vl for Qwen-VL)")
    data.add_argument("--min_pixels", type=int, default=None, help="Qwen-VL: images are resized to at least this many pixels; default: the processor's")
    data.add_argument("--max_pixels", type=int, default=None, help="Qwen-VL: ... and at most this many (fewer slots per image); default: the processor's")
    data.add_argument("--max_length", type=int, default=2048)
    data.add_argument("--on_overflow", choices=OVERFLOW_POLICIES, default="truncate", help="what to do with samples longer than --max_length")
    data.add_argument("--max_bad_fraction", type=float, default=0.01, help="stop when more than this fraction of samples is broken")
    data.add_argument("--num_workers", type=int, default=2, help="data-loading processes per rank")
    data.add_argument("--shuffle_buffer", type=int, default=1000, help="samples shuffled together (a window of each data lane); 0: no shuffling")
    data.add_argument("--data_lanes", type=int, default=None, help="stretches the global sample order is read in (fixed for the run's lifetime); default: ranks x --num_workers. To resume on other rank counts with least work, pick a multiple of every ranks x workers you will use (e.g. 48)")

    out = parser.add_argument_group("output")
    out.add_argument("--log_every", type=int, default=1, help="steps between progress lines")
    out.add_argument("--save_every", type=int, default=500, help="steps between checkpoints (a final one is always saved)")
    out.add_argument("--save_every_epoch", action="store_true", help="a checkpoint at the end of every epoch instead of every --save_every steps")
    out.add_argument("--keep_checkpoints", type=int, default=2, help="how many recent checkpoints to keep")
    out.add_argument("--export_model", action="store_true", help="at the end, convert the final checkpoint to a Hugging Face model in {output_dir}/hf (as tools/convert_to_hf.py does)")
    return parser


def add_sink_rule(group) -> None:
    """DIYSink recipes: which paper's V-sink rule the connector splits tokens by."""
    group.add_argument(
        "--sink_rule", choices=SINK_RULES, default="auto",
        help="V-sinks by DIYSink's token L2 norm (diysink) or LSG's dimension threshold (lsg); auto: DIYSink's where "
        "the sink profile knows its tau (built-in CLIP ViT-L: 100), else the profile's own",
    )


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the flags present on the command line (``--lr 1`` and ``--lr=1`` alike)."""
    typed = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return {action.dest for action in parser._actions if typed & set(action.option_strings)}


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None, demo_overrides: dict | None = None) -> argparse.Namespace:
    """Parse flags; on the demo (no --model), demo defaults replace the untyped ones."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.explicit = explicit_flags(parser, argv)
    args.demo = demo_name(args.model) is not None
    if args.demo:
        for name, value in {**DEMO_DEFAULTS, **(demo_overrides or {})}.items():
            if name not in args.explicit:
                setattr(args, name, value)
    return args
