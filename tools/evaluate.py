"""A model's score on a benchmark (its own metric) or its exact-match accuracy on an eval set, for every method.

On the papers' benchmarks (sinktrain.benchmarks: mmstar, cvbench, pope, mme, scienceqa_img, mmmu,
ocrbench, mathvista), loaded with `datasets` from the Hub or a local copy, split over ranks
under torchrun / deepspeed; writes NAME.json, NAME.md and NAME.predictions.jsonl with --out NAME.json:

    python tools/evaluate.py --model llava-hf/llava-1.5-7b-hf --benchmark mmstar --out results/mmstar.json
    torchrun --nproc_per_node 8 tools/evaluate.py --model ... --benchmark pope --benchmark_path /data/POPE --gates runs/lsg/gates

On an eval set of shards (defaults: the trained demo LLaVA, the demo eval set), for the stock model,
with LSG gates, or a DIYSink method:

    python tools/evaluate.py --limit 100 --out results.json
    python tools/evaluate.py --gates runs/lsg-l2/gates --report_r_sink --out gated.json
    python tools/evaluate.py --method sink_to_front --out front.json
    python tools/evaluate.py --model llava-hf/llava-1.5-7b-hf --data 'eval/{000000..000009}.tar' \\
        --method diysink_cot --diysink_checkpoint runs/diysink/checkpoints/step_005000 --out cot.json
    python tools/evaluate.py --method diysink_rew --rew runs/rew/rew --diysink_checkpoint ... --out rew.json

--method: stock | sink_to_front | diysink | diysink_rew | diysink_cot | sink_only | non_sink_only
(sinktrain.eval.methods; default: diysink with --diysink_checkpoint, else stock). Answers are
greedy generations to each record's first question (--max_new_tokens), compared with its first
gpt answer (strip, case-insensitive, a trailing '.' ignored). Records need a "category" field
(count, colour, shape, size, caption, other, ...). Next to the accuracy: seconds per sample and
the part of it the method's own work took (ReW's encoder and MLP, CoT's two routing answers). The
JSON keeps every prediction with what the method decided for it (ReW weights, CoT answers and
route; unmatched routing answers fall back to both token sets and are counted).
--report_r_sink adds the gates' r_sink mean / std per layer and category (LSG paper Fig. 8).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.benchmarks.cli import add_benchmark_flags, check_benchmark_flags, run_from_flags  # noqa: E402
from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.eval.setup import add_eval_flags, eval_kwargs, load_eval_backbone, load_eval_samples, place  # noqa: E402
from sinktrain.eval import evaluate  # noqa: E402
from sinktrain.eval.methods import METHODS, build_method, check_method_flags  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_eval_flags(parser)
    add_benchmark_flags(parser)
    method = parser.add_argument_group("method (default: the stock model)")
    method.add_argument("--method", choices=METHODS, default=None, help="default: diysink with --diysink_checkpoint, else stock")
    method.add_argument("--gates", default=None, help="LSG gate checkpoint directory (recipes/lsg_train.py or tools/stack_gates.py)")
    method.add_argument("--diysink_checkpoint", default=None, help="DeepSpeed checkpoint dir of recipes/diysink_finetune.py")
    method.add_argument("--no_sink_first", action="store_true", help="the DIYSink run used --no_sink_first")
    method.add_argument("--rew", default=None, help="diysink_rew: the rew/ directory of a recipes/diysink_rew.py run")
    method.add_argument("--sentence_encoder", default=None, help="diysink_rew: override the encoder rew.json names (e.g. a local copy)")
    method.add_argument("--cot_prompts", default=None, help="diysink_cot: a JSON file of routing prompts (sinktrain.diysink.cot.DEFAULT_PROMPTS)")
    parser.add_argument("--report_r_sink", action="store_true", help="r_sink mean/std per gated layer and category (needs --gates)")
    parser.add_argument("--out", default=None, help="write results (accuracies, predictions, r_sink) as JSON here (a benchmark adds .md and .predictions.jsonl)")
    args = parser.parse_args(argv)
    check_benchmark_flags(args)
    check_method(args)
    return args


def check_method(args: argparse.Namespace) -> None:
    if args.method is None:
        args.method = "diysink" if args.diysink_checkpoint else "stock"
    if args.gates and args.diysink_checkpoint:
        # LSG reads V-sink positions in the original token order; DualMLP moves sinks to the front.
        raise SinkTrainError("--gates and --diysink_checkpoint evaluate two different methods; pass one of them per run")
    check_method_flags(args.method, args.diysink_checkpoint, args.rew, args.cot_prompts, args.gates)
    if args.report_r_sink and not args.gates:
        raise SinkTrainError("--report_r_sink reports the gates' r_sink, so it needs --gates DIR")


def attach_method(backbone, args: argparse.Namespace):
    """The method, set up on the backbone in place (new modules placed like the rest), and the LSG gating (or None)."""
    method = build_method(
        backbone, args.method, args.diysink_checkpoint, not args.no_sink_first, args.rew, args.sentence_encoder,
        args.cot_prompts, args.template, args.device,
    )
    place(backbone, args)  # a new f_sink or ReW MLP was built on the CPU in fp32
    if args.gates:
        from sinktrain.lsg.gate_file import gating_from_checkpoint
        from sinktrain.lsg.scoped import to_model_device

        return method, to_model_device(gating_from_checkpoint(backbone, args.gates))
    return method, None


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.benchmark:
        run_from_flags(args, load_eval_backbone, attach_method)
        return
    backbone = load_eval_backbone(args)
    method, gating = attach_method(backbone, args)
    results = evaluate(backbone, load_eval_samples(args), gating, method=method, progress=True, **eval_kwargs(args))
    print(results.table(with_r_sink=args.report_r_sink))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results.to_dict(with_r_sink=args.report_r_sink), indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main_guard(main)
