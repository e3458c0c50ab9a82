"""LSG's per-layer protocol (paper Sec. 4.1, Table 1): one independent gate per layer, each its own
run of recipes/lsg_train.py, each evaluated on the chosen benchmarks at every epoch checkpoint,
and its gain over the stock model per sub-task.

    commands = [train_command(out, layer, launcher, recipe_flags) for layer in layers]   # or run them
    table = search_table(backbone, layers, out, benchmarks, eval_kwargs)                # evaluates, cached

Layout of ``out``: ``layer_NN/`` is layer NN's run (its checkpoints/step_N/gates are the epochs,
in step order; ``gates/`` appears when the run finished), ``layer_NN/eval/BENCH_step_N.json`` and
``stock/BENCH.json`` cache every evaluation, so an interrupted search (or one whose training ran as
separate jobs) continues where it stopped. A sub-task's score is the benchmark's own per-sub-task
number (its first table: MMStar's categories, CV-Bench's tasks, ...), "overall" its headline.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sinktrain.errors import SinkTrainError
from sinktrain.lsg.gate_file import META
from sinktrain.lsg.stacking import read_gate_sets
from sinktrain.lsg.scoped import scoped_gating
from sinktrain.train.checkpoint import write_atomically

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "lsg_train.py"
OVERALL = "overall"


@dataclass(frozen=True)
class SearchBenchmark:
    bench: object  # sinktrain.benchmarks.Benchmark
    rows: object  # its datasets.Dataset


def benchmark_paths(pairs: list[str], names: list[str]) -> dict[str, str]:
    """``--benchmark_path NAME=PATH ...`` as {name: path}; every NAME one of ``names``."""
    paths = {}
    for pair in pairs:
        name, equals, path = pair.partition("=")
        if not equals or name not in names:
            raise SinkTrainError(f"--benchmark_path {pair!r}: write NAME=PATH with NAME one of the --benchmark names ({', '.join(names)})")
        paths[name] = path
    return paths


def load_benchmarks(names: list[str], paths: dict[str, str], limit: int | None) -> list[SearchBenchmark]:
    """Each benchmark's rows (read and checked before any training or evaluation)."""
    from sinktrain.benchmarks import get_benchmark, load_rows

    return [SearchBenchmark(bench, load_rows(bench, paths.get(name), None, limit)) for name in names for bench in [get_benchmark(name)]]


def layer_dir(out: Path, layer: int) -> Path:
    return out / f"layer_{layer:02d}"


def train_command(out: Path, layer: int, launcher: list[str], recipe_flags: list[str]) -> list[str]:
    """Layer ``layer``'s run; ``--resume auto`` continues it if a job was cut short."""
    return [*launcher, str(RECIPE), "--layers", str(layer), "--output_dir", str(layer_dir(out, layer)), "--resume", "auto", *recipe_flags]


def trained(out: Path, layer: int) -> bool:
    return (layer_dir(out, layer) / "gates" / META).is_file()


def epoch_gates(out: Path, layer: int) -> list[Path]:
    """The gate checkpoints of layer ``layer``'s run, one per saved epoch, in step order."""
    checkpoints = sorted((layer_dir(out, layer) / "checkpoints").glob("step_*/gates"))
    if not checkpoints:
        raise SinkTrainError(
            f"{layer_dir(out, layer)} has no checkpoints/step_N/gates; train it first (run the search without "
            "--print_commands, or the command it printed)"
        )
    return checkpoints


def subtask_scores(run) -> dict[str, float]:
    """{sub-task: score} from the benchmark's first table, and "overall": its first headline number."""
    rows = next(iter(run.scores.tables.values()), [])
    scores = {}
    for row in rows:
        label = next(iter(row.values()))
        value = next((row[k] for k in ("accuracy", "score", "f1") if k in row), None)
        if label != "all" and value is not None:
            scores[str(label)] = float(value)
    return scores | {OVERALL: float(next(iter(run.scores.headline.values())))}


def benchmark_scores(backbone, item: SearchBenchmark, gating, eval_kwargs: dict) -> dict[str, float]:
    from sinktrain.benchmarks.runner import run_benchmark

    return subtask_scores(run_benchmark(backbone, item.bench, item.rows, gating, **eval_kwargs))


def benchmark_scorer(backbone, benchmarks: list[SearchBenchmark], eval_kwargs: dict):
    """Greedy stacking's scorer on benchmarks: every question of every benchmark as one prediction,
    right or wrong by its benchmark's own rule, reported per "benchmark: sub-task"."""
    from sinktrain.benchmarks.runner import run_benchmark
    from sinktrain.eval.results import Prediction, Results

    def score(gating) -> Results:
        predictions = []
        for b in benchmarks:
            run = run_benchmark(backbone, b.bench, b.rows, gating, **eval_kwargs)
            predictions += [
                Prediction(f"{b.bench.name}/{item.key}", f"{b.bench.name}: {item.group}", str(item.gold), response, judged=verdict.correct)
                for item, response, verdict in zip(run.items, run.responses, run.judged)
            ]
        return Results(predictions)

    return score


@contextmanager
def attached(backbone, gates: Path | None) -> Iterator:
    """The gates of a checkpoint on the backbone for the block (None: the stock model)."""
    if gates is None:
        yield None
        return
    (gate_set,) = read_gate_sets([str(gates)])
    meta = gate_set.meta
    with scoped_gating(backbone, meta.layers, meta.groups, gate_set.state, meta.scale_layout_slots) as gating:
        yield gating


def scores_at(backbone, benchmarks: list[SearchBenchmark], cache_dir: Path, tag: str, gates: Path | None, eval_kwargs: dict) -> dict:
    """{benchmark: sub-task scores} of the stock model or a gate checkpoint: cached ones read back
    (``cache_dir/BENCH{tag}.json``), the rest evaluated under one attachment of the gates and cached."""
    paths = {b.bench.name: cache_dir / f"{b.bench.name}{tag}.json" for b in benchmarks}
    scores = {name: json.loads(path.read_text()) for name, path in paths.items() if path.is_file()}
    missing = [b for b in benchmarks if b.bench.name not in scores]
    if missing:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with attached(backbone, gates) as gating:
            for b in missing:
                scores[b.bench.name] = benchmark_scores(backbone, b, gating, eval_kwargs)
                write_atomically(paths[b.bench.name], json.dumps(scores[b.bench.name], indent=2))
    return {b.bench.name: scores[b.bench.name] for b in benchmarks}


def search_table(backbone, layers: list[int], out: Path, benchmarks: list[SearchBenchmark], eval_kwargs: dict, progress=print) -> dict:
    """Scores of the stock model and of every layer's gates at every epoch, and their gains."""
    stock = scores_at(backbone, benchmarks, out / "stock", "", None, eval_kwargs)
    table = {"stock": stock, "layers": {}}
    for layer in layers:
        for epoch, gates in enumerate(epoch_gates(out, layer), start=1):
            progress(f"layer {layer}, epoch {epoch} ({gates.parent.name})")
            scores = scores_at(backbone, benchmarks, layer_dir(out, layer) / "eval", f"_{gates.parent.name}", gates, eval_kwargs)
            gains = {name: {task: value - stock[name][task] for task, value in tasks.items()} for name, tasks in scores.items()}
            entry = {"gates": str(gates), "step": gates.parent.name, "scores": scores, "gains": gains}
            table["layers"].setdefault(str(layer), {})[str(epoch)] = entry
    return table


def mean_gain(entry: dict) -> float:
    """A layer's gain at one epoch: its overall gain averaged over the benchmarks."""
    gains = [tasks[OVERALL] for tasks in entry["gains"].values()]
    return sum(gains) / len(gains)


def best_per_block(table: dict, epoch: int, block: int = 4) -> list[dict]:
    """The best layer of every block of ``block`` consecutive layers (paper Table 1), by mean_gain."""
    best: dict[int, tuple[float, int]] = {}
    for layer, epochs in table["layers"].items():
        if str(epoch) in epochs:
            candidate = (mean_gain(epochs[str(epoch)]), -int(layer))  # ties: the lower layer
            best[int(layer) // block] = max(best.get(int(layer) // block, candidate), candidate)
    return [
        {"block": f"{b * block}-{b * block + block - 1}", "layer": -neg_layer, "mean_gain": gain}
        for b, (gain, neg_layer) in sorted(best.items())
    ]


def ranked_layers(table: dict, epoch: int) -> list[int]:
    """Layers with a positive mean gain at ``epoch``, best first: what greedy stacking starts from."""
    gains = [(mean_gain(epochs[str(epoch)]), int(layer)) for layer, epochs in table["layers"].items() if str(epoch) in epochs]
    return [layer for gain, layer in sorted(gains, key=lambda g: (-g[0], g[1])) if gain > 0]
