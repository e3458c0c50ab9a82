"""LSG: train Layer-wise Sink Gates on a frozen backbone (next-token loss only).

Joint multi-layer training (the demo default gates layers 1,2,3 of the tiny LLaVA after a short
finetune, since gates act on a trained model; --model demo:qwen2_vl or demo:qwen2_5_vl for the
other families' trained demos); one layer with --layers 10; 3 groups (V-sinks / L-sinks /
ordinary) with --groups 3:

    deepspeed --num_gpus 2 recipes/lsg_train.py --ds_config ds_configs/zero3.json
    deepspeed --num_gpus 8 recipes/lsg_train.py --ds_config ds_configs/zero3.json \\
        --model llava-hf/llava-1.5-7b-hf --data 'cambrian10k/{000000..000009}.tar' \\
        --layers 3,6,7,10,19 --per_device_batch_size 16 --lr 1e-4 --num_epochs 2

Everything but the gates is frozen (ZeRO-3 partitions it all the same); only gate parameters
reach the optimizer. Gates are saved with every checkpoint (checkpoints/step_N/gates) and at the
end in {output_dir}/gates, the format tools/evaluate.py and tools/stack_gates.py read. For the
paper's constant learning rate use --ds_config ds_configs/zero3_constant_lr.json.
"""

from __future__ import annotations

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
PAPER_LAYERS = [3, 6, 7, 10, 19]  # LLaVA-1.5-7B, the paper's greedy stack


def parse_args(argv=None):
    parser = common_parser(__doc__.split("\n\n")[0])
    lsg = parser.add_argument_group("LSG")
    lsg.add_argument("--layers", default=None, help=f"gated LLM layers; default: {DEMO_LAYERS} on the demo, {PAPER_LAYERS} otherwise")
    lsg.add_argument("--groups", type=int, default=2, help="2: V-sinks vs other visual tokens; 3: V-sinks / L-sinks / ordinary")
    lsg.add_argument(
        "--scale_newline_slots", action="store_true",
        help="LLaVA-OneVision: scale the keys of its row-newline slots with the other visual tokens (default: like text, unscaled)",
    )
    # On the demo the gates must find the trained model's sink-reading layer (sinktrain.demo.trained)
    # in a few dozen steps; a larger rate makes r_sink swing from batch to batch instead of settling.
    args = parse(parser, argv, demo_overrides={"lr": 5e-3})
    args.layers = layer_list(args.layers) if args.layers else (DEMO_LAYERS if args.demo else PAPER_LAYERS)
    return args


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
    hooks = gate_hooks(gating, run.is_main)
    fit(run, backbone, args.template, hooks)


if __name__ == "__main__":
    main_guard(main)
