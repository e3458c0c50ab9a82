"""LSG: train Layer-wise Sink Gates on a frozen backbone (next-token loss only).

On a real model the default is the paper's main setting (LSG Sec. 4.1): one gate at one layer
(--layers 10, LLaVA-1.5-7B's best single layer), Adam at a constant lr, global batch 128 on any
GPU count (ds_configs/lsg_paper.json), 2 epochs, a checkpoint at the end of each. The paper trains
such a gate for every layer and stacks the best greedily: tools/lsg_layer_search.py runs the
per-layer protocol, tools/stack_gates.py stacks. Several --layers train jointly in one run: the
paper's joint multi-layer ablation, labelled so in the log; not the greedy stack.
The demo (no --model) gates layers 1,2,3 of the tiny LLaVA after a short finetune (gates act on a
trained model); --model demo:qwen2_vl or demo:qwen2_5_vl for the other families' trained demos.
3 groups (V-sinks / L-sinks / ordinary) with --groups 3:

    deepspeed --num_gpus 2 recipes/lsg_train.py --ds_config ds_configs/zero3.json
    deepspeed --num_gpus 8 recipes/lsg_train.py --model llava-hf/llava-1.5-7b-hf \\
        --data 'cambrian10k/{000000..000009}.tar' --lr 1e-4               # layer 10, the paper's setting
    deepspeed --num_gpus 8 recipes/lsg_train.py --model ... --data ... --layers 3,6,7,10,19   # joint ablation

Everything but the gates is frozen (ZeRO-3 partitions it all the same); only gate parameters
reach the optimizer. Gates are saved with every checkpoint (checkpoints/step_N/gates) and at the
end in {output_dir}/gates, the format tools/evaluate.py and tools/stack_gates.py read.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.lsg.gate_file import gate_state, meta_for, save_gates  # noqa: E402
from sinktrain.lsg.gating import LayerGating  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402
from sinktrain.tool_args import layer_list  # noqa: E402
from sinktrain.train.args import common_parser, parse  # noqa: E402
from sinktrain.train.loop import MethodHooks, fit  # noqa: E402
from sinktrain.train.run import load_run_backbone, setup_run  # noqa: E402

DEMO_LAYERS = [1, 2, 3]  # the tiny LLaVA has 4 decoder layers
PAPER_LAYER = 10  # LLaVA-1.5-7B's best single layer (LSG Table 1); its greedy stack is 10, 3, 7, 19, 6
PAPER_DEFAULTS = {"ds_config": "ds_configs/lsg_paper.json", "num_epochs": 2.0, "save_every_epoch": True}


def parse_args(argv=None):
    parser = common_parser(__doc__.split("\n\n")[0])
    lsg = parser.add_argument_group("LSG")
    lsg.add_argument("--layers", default=None, help=f"gated LLM layers (several: joint training, the paper's ablation); default: {DEMO_LAYERS} on the demo, {PAPER_LAYER} otherwise")
    lsg.add_argument("--groups", type=int, default=2, help="2: V-sinks vs other visual tokens; 3: V-sinks / L-sinks / ordinary")
    lsg.add_argument(
        "--multi_turn", choices=("split", "joint"), default="split",
        help="split: each answer of a multi-turn sample is its own example, the turns before it as context, so the gate "
        "reads the end of the question it answers, as generation does (sinktrain.data.turns); joint: one example per "
        "sample, every answer gated from the first question",
    )
    lsg.add_argument(
        "--scale_newline_slots", action="store_true",
        help="LLaVA-OneVision: scale the keys of its row-newline slots with the other visual tokens (default: like text, unscaled)",
    )
    # On the demo the gates must find the trained model's sink-reading layer (sinktrain.demo.trained)
    # in a few dozen steps; a larger rate makes r_sink swing from batch to batch instead of settling.
    args = parse(parser, argv, demo_overrides={"lr": 5e-3})
    if not args.demo:
        for name, value in PAPER_DEFAULTS.items():
            if name not in args.explicit:
                setattr(args, name, value)
    args.layers = layer_list(args.layers) if args.layers else (DEMO_LAYERS if args.demo else [PAPER_LAYER])
    return args


def training_mode(layers: list[int]) -> str:
    if len(layers) == 1:
        return f"single-layer gate at layer {layers[0]} (the paper's per-layer training)"
    return f"joint multi-layer training of layers {layers} (the paper's ablation; its greedy stack is tools/stack_gates.py)"


def gate_hooks(gating: LayerGating, is_main: bool) -> MethodHooks:
    def metrics() -> dict:
        return {f"lsg/r_sink/layer_{layer}": ratios[:, 0] for layer, ratios in gating.last_ratios.items()}

    def save(directory: Path) -> None:
        state = gate_state(gating)  # a ZeRO-3 gather: every rank takes part
        if is_main:
            save_gates(directory / "gates", state, meta_for(gating))

    return MethodHooks(metrics=metrics, extra_save=save, final_save=save)


def main(argv=None) -> None:
    args = parse_args(argv)
    run = setup_run(args, "lsg-train", trained_demo=True)
    backbone = load_run_backbone(run)
    backbone.model.requires_grad_(False)
    gating = LayerGating(backbone, args.layers, args.groups, args.scale_newline_slots)
    logging.getLogger("sinktrain").info("LSG: %s", training_mode(args.layers))
    hooks = gate_hooks(gating, run.is_main)
    fit(run, backbone, args.template, hooks)


if __name__ == "__main__":
    main_guard(main)
