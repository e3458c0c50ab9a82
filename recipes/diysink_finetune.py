"""DIYSink stage 2: finetune the DualMLP connector jointly with the LLM (ViT frozen), LLaVA-style.

Runs on the embedded tiny LLaVA and demo shards with no flags; on another family's tiny model with
--model demo:FAMILY (qwen2_vl, qwen2_5_vl, llava_onevision, deepseek_vl, deepseek_vl_hybrid); on a
real model and data with --model and --data:

    deepspeed --num_gpus 2 recipes/diysink_finetune.py --ds_config ds_configs/zero3.json
    deepspeed --num_gpus 8 recipes/diysink_finetune.py --ds_config ds_configs/zero3.json \\
        --model llava-hf/llava-1.5-7b-hf --data 'shards/{000000..000665}.tar' \\
        --connector_init runs/diysink-pretrain/connector.safetensors      # optional
    deepspeed ... --model Qwen/Qwen2-VL-7B-Instruct --max_pixels 802816 ...  # the same shards, Qwen's format
    deepspeed ... --output_dir runs/my-run --resume auto                   # continue a run

Both connectors start from the backbone's own (or --connector_init); each image's V-sink slots
are placed first, then the other slots, each token from its own connector and with its own
position ids (DIYSink, "To Sink or Not to Sink", Sec. 4: DualMLP).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.diysink.attach import attach_dual_mlp  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402
from sinktrain.train.args import add_sink_rule, common_parser, parse  # noqa: E402
from sinktrain.train.loop import MethodHooks, fit  # noqa: E402
from sinktrain.train.run import load_run_backbone, setup_run  # noqa: E402


def parse_args(argv=None):
    parser = common_parser(__doc__.split("\n\n")[0])
    diysink = parser.add_argument_group("DIYSink")
    add_sink_rule(diysink)
    diysink.add_argument("--connector_init", default=None, help="safetensors with f_sink.* / f_non.* (stage-1 output); default: both from the backbone's projector")
    diysink.add_argument("--no_sink_first", action="store_true", help="keep the original token order (ablation)")
    return parse(parser, argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    run = setup_run(args, "diysink-finetune")
    backbone = load_run_backbone(run)
    backbone.freeze_vision()
    attach_dual_mlp(backbone, sink_first=not args.no_sink_first, connector_init=args.connector_init)
    hooks = MethodHooks(metrics=lambda: {"diysink/sinks_per_image": backbone.slots.sinks_per_image})
    fit(run, backbone, args.template, hooks)


if __name__ == "__main__":
    main_guard(main)
