"""``tools/evaluate.py --benchmark NAME``: the flags, and one run from them on every rank.

    python tools/evaluate.py --model llava-hf/llava-1.5-7b-hf --benchmark mmstar --out results/mmstar.json
    torchrun --nproc_per_node 8 tools/evaluate.py --model ... --benchmark pope --benchmark_path /data/POPE

Rank 0 prints the Markdown table and writes the JSON, the Markdown and the predictions; the
method summaries (e.g. CoT's route counts) are added up over ranks.
"""

from __future__ import annotations

import argparse
import time

from sinktrain.benchmarks import BENCHMARKS, get_benchmark, load_rows
from sinktrain.benchmarks.ranks import eval_ranks, finish, gather
from sinktrain.errors import SinkTrainError
from sinktrain.eval.setup import eval_kwargs


def add_benchmark_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("benchmark (instead of --data)")
    group.add_argument("--benchmark", choices=list(BENCHMARKS), default=None, help="score on this benchmark with its own metric")
    group.add_argument("--benchmark_path", default=None, help="a Hub dataset id, a local copy of it (directory), or parquet files in its schema; default: the benchmark's Hub id")
    group.add_argument("--benchmark_split", default=None, help="default: the benchmark's evaluation split (MMStar val, MMMU validation, MathVista testmini, else test)")
    group.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher


def check_benchmark_flags(args: argparse.Namespace) -> None:
    if args.benchmark is None:
        if args.benchmark_path or args.benchmark_split:
            raise SinkTrainError("--benchmark_path / --benchmark_split say where a benchmark's data is; pass --benchmark NAME with them")
        return
    if args.data:
        raise SinkTrainError(f"--data is an eval set of shards and --benchmark {args.benchmark} a benchmark dataset; pass one of them")


def run_from_flags(args: argparse.Namespace, load_backbone, attach_method) -> dict | None:
    """Evaluate ``args.benchmark``; rank 0 prints and writes the results and returns their dict."""
    from sinktrain.benchmarks.report import markdown, to_dict, write_run
    from sinktrain.benchmarks.runner import run_benchmark

    rank, world, args.device = eval_ranks(args.device)
    bench = get_benchmark(args.benchmark)
    rows = load_rows(bench, args.benchmark_path, args.benchmark_split, args.limit)  # before the model: bad data fails fast
    backbone = load_backbone(args)
    method, gating = attach_method(backbone, args)
    started = time.perf_counter()
    run = run_benchmark(backbone, bench, rows, gating, method, **eval_kwargs(args, benchmark=True), progress=True, share=(rank, world))
    summary = add_up(gather(method.summary())) if world > 1 else method.summary()
    if not args.report_r_sink:
        run.r_sink.clear()
    setup = run_setup(args, bench, world, run, method, summary, time.perf_counter() - started)
    finish()
    if rank != 0:
        return None
    print(markdown(run, setup))
    if args.out:
        for path in write_run(run, args.out, setup).values():
            print(f"wrote {path}")
    return to_dict(run, setup)


def run_setup(args, bench, world: int, run, method, summary: dict, seconds: float) -> dict:
    setup = {
        "model": args.model or "demo", "source": args.benchmark_path or bench.hub_id, "split": args.benchmark_split or bench.split,
        "method": method.name, "world_size": world, "max_new_tokens": args.max_new_tokens or bench.max_new_tokens,
        "wall_seconds": round(seconds, 3),
    }
    if args.gates:
        setup["gates"] = args.gates
    if method.loaded:
        setup["method_setup"] = method.loaded
    if summary:
        setup["method_summary"] = summary
    return setup


def add_up(values: list):
    """Rank summaries summed: numbers added, dicts merged key by key, anything else from rank 0."""
    first = values[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(key for value in values for key in value))
        return {key: add_up([value[key] for value in values if key in value]) for key in keys}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(values)
    return first
