"""LSG greedy stacking: combine independently trained single-layer gates, best first (Table 2).

    python recipes/lsg_train.py --layers 1 --output_dir runs/l1   # ... one run per layer
    python tools/stack_gates.py --gates runs/l1/gates runs/l2/gates runs/l3/gates --out runs/stack
    python tools/evaluate.py --gates runs/stack                    # the stacked gates, as usual
    python tools/stack_gates.py --search runs/layer_search/search.json --top 5 --out runs/stack \\
        --benchmark mmstar cvbench --benchmark_path mmstar=/data/MMStar cvbench=/data/CV-Bench   # the paper's protocol

Every input is evaluated alone, inputs are ordered by gain over the stock model, then added one
at a time and the accumulated set is evaluated after each addition. --out DIR receives the
stacked gate checkpoint (the best step with --keep best, every input with --keep all), loadable
by tools/evaluate.py --gates, plus the table as stacking.json and stacking.md. Scored by exact
match on an eval set (--data), or with --benchmark on benchmarks, every question right or wrong by
its benchmark's own rule (accuracy over all their questions). Cost: 2 x inputs evaluations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.benchmarks import BENCHMARKS  # noqa: E402
from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.eval.setup import add_eval_flags, eval_kwargs, load_eval_backbone, load_eval_samples  # noqa: E402
from sinktrain.lsg.gate_file import META  # noqa: E402
from sinktrain.lsg.layer_search import benchmark_paths, benchmark_scorer, load_benchmarks  # noqa: E402
from sinktrain.lsg.stack_table import markdown_table  # noqa: E402
from sinktrain.lsg.stacking import (  # noqa: E402
    KEEP, check_stackable, chosen_sets, greedy_stack, merge_gate_sets, read_gate_sets, save_gate_set,
)
from sinktrain.recipe import main_guard  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_eval_flags(parser)
    stack = parser.add_argument_group("stacking")
    stack.add_argument("--gates", nargs="+", default=None, help="gate checkpoint dirs, one per layer (recipes/lsg_train.py --layers L)")
    stack.add_argument("--search", default=None, help="instead of --gates: tools/lsg_layer_search.py's search.json; its layers with a positive gain, best first")
    stack.add_argument("--epoch", type=int, default=1, help="with --search: whose epoch's gates")
    stack.add_argument("--top", type=int, default=None, help="with --search: at most this many layers")
    stack.add_argument("--out", required=True, help="directory for the stacked gates, stacking.json and stacking.md")
    stack.add_argument("--keep", choices=KEEP, default="best", help="save the best stacked step, or every input")
    stack.add_argument("--benchmark", nargs="+", choices=list(BENCHMARKS), default=None, help="score on these benchmarks (each question by its own rule) instead of --data")
    stack.add_argument("--benchmark_path", nargs="*", default=[], metavar="NAME=PATH", help="with --benchmark: a local copy per benchmark")
    args = parser.parse_args(argv)
    if (args.gates is None) == (args.search is None):
        raise SinkTrainError("pass the gates to stack: --gates DIR ... or --search search.json (tools/lsg_layer_search.py)")
    if args.search:
        args.gates = gates_from_search(args.search, args.epoch, args.top)
    args.benchmark_paths = benchmark_paths(args.benchmark_path, args.benchmark or [])
    if args.benchmark and args.data:
        raise SinkTrainError("--data is an eval set and --benchmark scores on benchmarks; pass one of them")
    if (Path(args.out) / META).exists():
        raise SinkTrainError(f"--out {args.out} already holds a gate checkpoint; choose a new directory or delete it")
    return args


def gates_from_search(path: str, epoch: int, top: int | None) -> list[str]:
    """The gate checkpoints of the search's layers with a positive gain at ``epoch``, best first."""
    table = json.loads(Path(path).read_text())
    layers = table["ranked_layers"].get(str(epoch))
    if layers is None:
        raise SinkTrainError(f"--epoch {epoch}: {path} has epochs {', '.join(table['ranked_layers'])}")
    if not layers:
        raise SinkTrainError(f"no layer of {path} gains over the stock model at epoch {epoch}; there is nothing to stack")
    return [table["layers"][str(layer)][str(epoch)]["gates"] for layer in layers[:top]]


def main(argv=None) -> None:
    args = parse_args(argv)
    sets = read_gate_sets(args.gates)
    check_stackable(sets)  # before loading the model
    benchmarks = load_benchmarks(args.benchmark, args.benchmark_paths, args.limit) if args.benchmark else None
    backbone = load_eval_backbone(args)
    if benchmarks:
        result = greedy_stack(backbone, None, sets, score=benchmark_scorer(backbone, benchmarks, eval_kwargs(args, benchmark=True)))
    else:
        result = greedy_stack(backbone, load_eval_samples(args), sets, **eval_kwargs(args))
    stacked = merge_gate_sets(chosen_sets(result, sets, args.keep))
    out = Path(args.out)
    save_gate_set(stacked, out)
    result["saved"] = {"keep": args.keep, "layers": stacked.meta.layers}
    (out / "stacking.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result)
    (out / "stacking.md").write_text(table)
    print(table)
    print(f"wrote gates for layers {stacked.meta.layers} ({args.keep}), stacking.json and stacking.md to {out}")


if __name__ == "__main__":
    main_guard(main)
