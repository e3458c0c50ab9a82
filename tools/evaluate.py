"""Exact-match accuracy of a model on an eval set, overall and per task category.

Stock model, with LSG gates, or a DIYSink run (defaults: the trained demo LLaVA, demo eval set):

    python tools/evaluate.py --limit 100 --out results.json
    python tools/evaluate.py --gates runs/lsg-l2/gates --report_r_sink --out gated.json
    python tools/evaluate.py --model llava-hf/llava-1.5-7b-hf --data 'eval/{000000..000009}.tar' \\
        --diysink_checkpoint runs/diysink/checkpoints/step_005000 --out diysink.json

Answers are greedy generations to each record's first question (--max_new_tokens), compared
with its first gpt answer (strip, case-insensitive, a trailing '.' ignored). Records need a
"category" field (count, colour, shape, size, caption, other, ...). --report_r_sink adds the
gates' r_sink mean / std per layer and category (LSG paper Fig. 8) to the table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.eval.setup import add_eval_flags, eval_kwargs, load_eval_backbone, load_eval_samples, place  # noqa: E402
from sinktrain.eval import evaluate  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_eval_flags(parser)
    method = parser.add_argument_group("method (default: the stock model)")
    method.add_argument("--gates", default=None, help="LSG gate checkpoint directory (recipes/lsg_train.py or tools/stack_gates.py)")
    method.add_argument("--diysink_checkpoint", default=None, help="DeepSpeed checkpoint dir of recipes/diysink_finetune.py")
    method.add_argument("--no_sink_first", action="store_true", help="the DIYSink run used --no_sink_first")
    parser.add_argument("--report_r_sink", action="store_true", help="r_sink mean/std per gated layer and category (needs --gates)")
    parser.add_argument("--out", default=None, help="write results (accuracies, predictions, r_sink) as JSON here")
    args = parser.parse_args(argv)
    check_method(args)
    return args


def check_method(args: argparse.Namespace) -> None:
    if args.gates and args.diysink_checkpoint:
        # LSG reads V-sink positions in the original token order; DualMLP moves sinks to the front.
        raise SinkTrainError("--gates and --diysink_checkpoint evaluate two different methods; pass one of them per run")
    if args.report_r_sink and not args.gates:
        raise SinkTrainError("--report_r_sink reports the gates' r_sink, so it needs --gates DIR")


def attach_method(backbone, args: argparse.Namespace):
    """Returns the gating (or None); a DIYSink checkpoint is loaded into the backbone in place."""
    if args.diysink_checkpoint:
        from sinktrain.diysink.checkpoint import load_diysink_checkpoint

        load_diysink_checkpoint(backbone, args.diysink_checkpoint, sink_first=not args.no_sink_first)
        place(backbone, args)  # the new f_sink was built on the CPU in fp32
    if args.gates:
        from sinktrain.lsg.gate_file import gating_from_checkpoint
        from sinktrain.lsg.scoped import to_model_device

        return to_model_device(gating_from_checkpoint(backbone, args.gates))
    return None


def main(argv=None) -> None:
    args = parse_args(argv)
    backbone = load_eval_backbone(args)
    gating = attach_method(backbone, args)
    results = evaluate(backbone, load_eval_samples(args), gating, **eval_kwargs(args))
    print(results.table(with_r_sink=args.report_r_sink))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results.to_dict(with_r_sink=args.report_r_sink), indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main_guard(main)
