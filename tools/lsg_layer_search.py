"""LSG's per-layer search (paper Sec. 4.1, Table 1): a gate per layer, each trained alone and
evaluated on benchmarks at every epoch; gains per sub-task, the best layer per block of 4, a heatmap.

    python tools/lsg_layer_search.py --model llava-hf/llava-1.5-7b-hf --data 'cambrian10k/{000000..000009}.tar' \\
        --layers 0-31 --benchmark mmstar cvbench --benchmark_path mmstar=/data/MMStar cvbench=/data/CV-Bench \\
        --launcher "deepspeed --num_gpus 8" --out runs/layer_search
    python tools/lsg_layer_search.py ... --print_commands      # one training command per layer, for separate jobs
    python tools/stack_gates.py --search runs/layer_search/search.json --out runs/stack

Each layer's run is `recipes/lsg_train.py --layers L --output_dir OUT/layer_LL` (on a real model the
recipe's default is the paper's setting: constant lr, global batch 128, 2 epochs, a checkpoint per
epoch); flags after `--` go to every run. Finished runs are not repeated and every evaluation is
cached, so the search continues where it stopped, and runs trained as separate jobs are picked up.
Writes search.json, search.md (gains at --epoch; the paper reports epoch 1) and heatmap.png to --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.benchmarks import BENCHMARKS  # noqa: E402
from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.eval.setup import add_eval_flags, eval_kwargs, load_eval_backbone  # noqa: E402
from sinktrain.lsg.layer_search import (  # noqa: E402
    benchmark_paths, best_per_block, load_benchmarks, ranked_layers, search_table, train_command, trained,
)
from sinktrain.lsg.search_report import epochs_of, markdown, plot_gains  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402
from sinktrain.tool_args import layer_list  # noqa: E402
from sinktrain.train.checkpoint import write_atomically  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    recipe_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_eval_flags(parser)
    parser._option_string_actions["--data"].help = "training shards for every layer's run; default: the demo shards"
    search = parser.add_argument_group("search")
    search.add_argument("--layers", required=True, help="layers to search, e.g. 0-31 or 3,6,10")
    search.add_argument("--benchmark", nargs="+", required=True, choices=list(BENCHMARKS), help="benchmarks every gate is evaluated on")
    search.add_argument("--benchmark_path", nargs="*", default=[], metavar="NAME=PATH", help="a local copy per benchmark (default: its Hub id)")
    search.add_argument("--out", required=True, help="the search directory: one run per layer, caches, search.json/.md, heatmap.png")
    search.add_argument("--launcher", default=shlex.quote(sys.executable), help='how each run starts, e.g. "deepspeed --num_gpus 8"')
    search.add_argument("--epoch", type=int, default=1, help="the epoch search.md tabulates (the paper's Table 1: epoch 1)")
    search.add_argument("--print_commands", action="store_true", help="print each layer's training command and stop")
    args = parser.parse_args(argv)
    args.layers, args.recipe_flags = layer_list(args.layers), recipe_flags
    args.benchmark_paths = benchmark_paths(args.benchmark_path, args.benchmark)
    return args


def recipe_flags(args: argparse.Namespace) -> list[str]:
    given = [flag for name in ("model", "data", "sink_profile") if getattr(args, name) for flag in (f"--{name}", getattr(args, name))]
    return given + args.recipe_flags


def train_layers(args: argparse.Namespace, out: Path) -> None:
    for layer in args.layers:
        if trained(out, layer):
            print(f"layer {layer}: trained ({out / f'layer_{layer:02d}'})")
            continue
        command = train_command(out, layer, shlex.split(args.launcher), recipe_flags(args))
        print(f"layer {layer}: {shlex.join(command)}", flush=True)
        if subprocess.run(command).returncode != 0:
            raise SinkTrainError(f"layer {layer}'s training run failed (its output is above); run the search again to continue from there")


def write_results(table: dict, args: argparse.Namespace, out: Path) -> None:
    if args.epoch not in epochs_of(table):
        raise SinkTrainError(f"--epoch {args.epoch}: the runs saved epochs {epochs_of(table)}; pick one of them")
    table["best_per_block"] = {str(e): best_per_block(table, e) for e in epochs_of(table)}
    table["ranked_layers"] = {str(e): ranked_layers(table, e) for e in epochs_of(table)}
    write_atomically(out / "search.json", json.dumps(table, indent=2))
    text = markdown(table, args.epoch)
    write_atomically(out / "search.md", text)
    plot_gains(table, out / "heatmap.png")
    print(text)
    print(f"wrote search.json, search.md and heatmap.png to {out}")


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    if args.print_commands:
        for layer in args.layers:
            print(shlex.join(train_command(out, layer, shlex.split(args.launcher), recipe_flags(args))))
        return
    benchmarks = load_benchmarks(args.benchmark, args.benchmark_paths, args.limit)  # checked before hours of training
    train_layers(args, out)
    backbone = load_eval_backbone(args)
    write_results(search_table(backbone, args.layers, out, benchmarks, eval_kwargs(args, benchmark=True)), args, out)


if __name__ == "__main__":
    main_guard(main)
