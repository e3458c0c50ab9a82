"""LSG oracle sweep: fixed (c_sink, 2 - c_sink) key coefficients per layer, accuracy per task.

Defaults: the trained demo LLaVA, the demo eval set, every decoder layer, the paper's grid
c_sink in {0.0, 0.2, ..., 2.0}:

    python tools/oracle_sweep.py --limit 200 --out runs/oracle/oracle.json
    python tools/oracle_sweep.py --model llava-hf/llava-1.5-7b-hf --data 'eval/{000000..000009}.tar' \\
        --layers 3,6,7,10,19 --out runs/oracle-7b/oracle.json

One layer at a time (never several at once), so each cell isolates that layer. Writes the JSON
(per layer, per c_sink, per task accuracy; baseline = c_sink 1.0 = the stock model; the best
c_sink and gain per layer and task) and a heatmap PNG beside it (--plot to choose its path):
layers x tasks, colour = best gain in pp, annotated with the best c_sink (paper Fig. S4).
Cost: 1 + (steps - 1) x layers evaluations of the eval set.

Stage 2 (the paper's 3-group oracle), from a stage-1 JSON: the V-sink coefficient fixed at each
task's stage-1 optimum, the L-sink and ordinary coefficients swept independently over the grid
(sinktrain.lsg.oracle_split; needs LLM sink dims in the sink profile):

    python tools/oracle_sweep.py --split_rest runs/oracle/oracle.json --steps 5 --out runs/oracle/split.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.eval.setup import add_eval_flags, eval_kwargs, load_eval_backbone, load_eval_samples  # noqa: E402
from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.lsg.oracle import PAPER_STEPS, coefficient_grid, oracle_sweep  # noqa: E402
from sinktrain.lsg.oracle_split import split_rest_sweep  # noqa: E402
from sinktrain.lsg.oracle_plot import plot_best_gains  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402
from sinktrain.tool_args import layer_list  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_eval_flags(parser)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--layers", default=None, help="comma-separated LLM layers; default: all of them")
    sweep.add_argument("--steps", type=int, default=PAPER_STEPS, help="grid points from c_sink 0 to 2 (odd; 11 = steps of 0.2)")
    sweep.add_argument("--split_rest", default=None, help="stage 2 from this stage-1 JSON: sweep c_lsink and c_ordinary (its layers)")
    parser.add_argument("--out", default="oracle.json", help="JSON results")
    parser.add_argument("--plot", default=None, help="heatmap PNG; default: --out with .png")
    args = parser.parse_args(argv)
    args.grid = coefficient_grid(args.steps)  # validate before loading anything
    args.layers = layer_list(args.layers) if args.layers else None
    return args


def split_rest(args) -> None:
    """Stage 2: the rest split into L-sinks and ordinary tokens, from a stage-1 result."""
    try:
        stage_one = json.loads(Path(args.split_rest).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SinkTrainError(f"--split_rest {args.split_rest}: cannot read a stage-1 oracle JSON ({err})") from err
    result = split_rest_sweep(load_eval_backbone(args), load_eval_samples(args), stage_one, args.grid, **eval_kwargs(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for layer, best in result["best"].items():
        print(f"layer {layer}: " + ", ".join(
            f"{task} {b['gain_over_stage_one']:+.1f} pp over stage 1 @ (c_sink {b['c_sink']:g}, c_lsink {b['c_lsink']:g}, "
            f"c_ordinary {b['c_ordinary']:g})" for task, b in best.items()
        ))
    print(f"wrote {out}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.split_rest:
        return split_rest(args)
    backbone = load_eval_backbone(args)
    layers = args.layers or list(range(len(backbone.decoder_layers())))
    result = oracle_sweep(backbone, load_eval_samples(args), layers, args.grid, **eval_kwargs(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot_best_gains(result, plot)
    for layer, best in result["best"].items():
        print(f"layer {layer}: " + ", ".join(f"{task} {b['gain']:+.1f} pp @ c_sink {b['c_sink']:g}" for task, b in best.items()))
    print(f"wrote {out} and {plot}")


if __name__ == "__main__":
    main_guard(main)
