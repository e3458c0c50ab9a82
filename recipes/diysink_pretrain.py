"""DIYSink stage 1: pretrain the DualMLP connector's two projectors separately, vision and LLM frozen.

Runs on the embedded tiny LLaVA and demo caption shards with no flags; --model demo:FAMILY for
another family's tiny model; on a real model with LLaVA's projector-pretraining data:

    deepspeed --num_gpus 2 recipes/diysink_pretrain.py
    deepspeed --num_gpus 8 recipes/diysink_pretrain.py --ds_config ds_configs/zero2.json \\
        --model llava-hf/llava-1.5-7b-hf --data 'captions/{000000..000557}.tar' \\
        --per_device_batch_size 32 --output_dir runs/diysink-pretrain
    deepspeed ... recipes/diysink_finetune.py --connector_init runs/diysink-pretrain/connector.safetensors

``f_sink`` trains on sink-only visual input and ``f_non`` on non-sink-only input: in each pass
the LLM sees only that projector's image tokens (DIYSink, "To Sink or Not to Sink", Sec. 4).
``--connector both`` (the default) trains both in one run, each exactly as a run of its own would
(sinktrain.diysink.pretrain says how); ``sink`` or ``non`` trains one. LLaVA's projector-pretraining
setting: the family's ``plain`` caption format, lr 1e-3, cosine schedule, warmup 3%, no weight
decay. The connector is written to {output_dir}/connector.safetensors (and into every checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain import demo  # noqa: E402
from sinktrain.diysink.attach import attach_dual_mlp  # noqa: E402
from sinktrain.diysink.connector_file import FILENAME, connector_metadata, save_connector  # noqa: E402
from sinktrain.diysink.pretrain import PARTS, SeparatePretraining, check_has_images, check_independent, make_trainable  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402
from sinktrain.train.args import add_sink_rule, common_parser, parse  # noqa: E402
from sinktrain.train.loop import MethodHooks, fit  # noqa: E402
from sinktrain.train.run import load_run_backbone, setup_run  # noqa: E402

STAGE1 = {"lr": 1e-3, "max_grad_norm": 0.0, "ds_config": "ds_configs/zero2.json"}  # LLaVA-1.5's pretraining setting


def parse_args(argv=None):
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.set_defaults(**STAGE1)
    stage1 = parser.add_argument_group("DIYSink stage 1")
    add_sink_rule(stage1)
    stage1.add_argument("--connector", choices=sorted(PARTS), default="both", help="which projector(s) to train")
    args = parse(parser, argv, demo_overrides=STAGE1)
    args.parts = PARTS[args.connector]
    return args


def connector_hooks(pretraining: SeparatePretraining, connector, metadata: dict, is_main: bool) -> MethodHooks:
    return MethodHooks(
        metrics=pretraining.metrics,
        extra_save=lambda directory: save_connector(connector, directory / FILENAME, metadata, is_main),
        final_save=lambda directory: save_connector(connector, directory / FILENAME, metadata, is_main),
        loss=pretraining,
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    run = setup_run(args, "diysink-pretrain", demo_data=lambda model: demo.demo_caption_pattern())
    check_independent(args.parts, run.settings.max_grad_norm, run.settings.precision)
    check_has_images(run.shards)
    backbone = load_run_backbone(run)
    connector = attach_dual_mlp(backbone, sink_first=False)
    make_trainable(backbone, connector, args.parts)
    pretraining = SeparatePretraining(backbone, args.parts)
    hooks = connector_hooks(pretraining, connector, connector_metadata(backbone, args.parts), run.is_main)
    fit(run, backbone, args.template or backbone.pretraining_template(), hooks)


if __name__ == "__main__":
    main_guard(main)
