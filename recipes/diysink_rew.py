"""DIYSink ReW: train only a small MLP that weights the two connectors' outputs per question.

Runs on the embedded trained tiny LLaVA with no flags (its DualMLP starts from its own projector)
and its ReW demo set (sinktrain.demo.rew_set: global questions answered from the V-sinks alone,
local ones from the other tokens alone; try --balance_by category, and see rew/rew_weights.png:
the non-sink weight goes down for global questions and stays higher for local ones); --model demo:FAMILY
for another family; on a real DIYSink model:

    deepspeed --num_gpus 2 recipes/diysink_rew.py
    deepspeed --num_gpus 1 recipes/diysink_rew.py --ds_config ds_configs/zero2.json \\
        --model llava-hf/llava-1.5-7b-hf --diysink_checkpoint runs/diysink/checkpoints/step_005197 \\
        --data 'rew/{000000..000003}.tar' --balance_by category --per_category 80

A frozen sentence encoder (--sentence_encoder, mean pooling) embeds each sample's first question;
the MLP maps it, standardised by the training questions' embeddings (the first 4096), to
[w_sink, w_non] (both exactly 1 at the start: the plain DualMLP), which scale
the sample's V-sink and other visual tokens where the LLM receives them (DIYSink, "To Sink or Not
to Sink", Sec. 4.2). Everything else is frozen. The paper's setting: 10 epochs, lr 1e-2, global
batch 20, 120-240 samples balanced over local, global and mixed tasks (--balance_by category:
the same number drawn from each category, written to {output_dir}/rew_data). The weights are
logged per category (TensorBoard rew/w_sink/CATEGORY) and the final ones written to
{output_dir}/rew/ (rew.safetensors, rew.json, rew_weights.png).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain import demo  # noqa: E402
from sinktrain.data.balance import write_balanced  # noqa: E402
from sinktrain.diysink.attach import attach_dual_mlp  # noqa: E402
from sinktrain.diysink.checkpoint import load_into_run  # noqa: E402
from sinktrain.diysink.rew import ReWeighting  # noqa: E402
from sinktrain.diysink.rew_file import save_rew  # noqa: E402
from sinktrain.diysink.sentence import DEFAULT, SentenceEncoder  # noqa: E402
from sinktrain.errors import SinkTrainError  # noqa: E402
from sinktrain.recipe import main_guard  # noqa: E402
from sinktrain.train.args import add_sink_rule, common_parser, parse  # noqa: E402
from sinktrain.train.loop import MethodHooks, fit  # noqa: E402
from sinktrain.train.run import load_run_backbone, setup_run  # noqa: E402

PAPER = {"lr": 1e-2, "num_epochs": 10.0, "per_device_batch_size": 20, "warmup_ratio": 0.0, "ds_config": "ds_configs/zero2.json"}
DEMO = {"lr": 1e-2, "per_device_batch_size": 10, "warmup_ratio": 0.0}


def parse_args(argv=None):
    parser = common_parser(__doc__.split("\n\n")[0])
    parser.set_defaults(**PAPER)
    rew = parser.add_argument_group("ReW")
    add_sink_rule(rew)
    rew.add_argument("--sentence_encoder", default=None, help=f"transformers encoder (mean-pooled); default: {DEFAULT}, the demo's own on the demo")
    rew.add_argument("--diysink_checkpoint", default=None, help="a recipes/diysink_finetune.py checkpoint directory to start from")
    rew.add_argument("--connector_init", default=None, help="else: a stage-1 connector.safetensors; default: both projectors from the model's own")
    rew.add_argument("--no_sink_first", action="store_true", help="the DIYSink model was finetuned with --no_sink_first")
    rew.add_argument("--balance_by", default=None, help="a record field (e.g. category): train on the same number of samples of each value")
    rew.add_argument("--per_category", type=int, default=None, help="samples per category with --balance_by; default: the smallest category's count")
    rew.add_argument("--hidden", type=int, default=64, help="the ReW MLP's hidden width")
    args = parse(parser, argv, demo_overrides=DEMO)
    if args.diysink_checkpoint and args.connector_init:
        raise SinkTrainError("--diysink_checkpoint holds the whole DIYSink model, connector included; leave --connector_init out")
    if args.sentence_encoder is None:
        args.sentence_encoder = str(demo.ensure_demo_sentence_encoder()) if args.demo else DEFAULT
    return args


def balanced(args):
    """setup_run's data step: the category-balanced subset, written once into the output directory."""
    if not args.balance_by:
        return None
    return lambda shards, output_dir, world_size: write_balanced(
        shards, args.balance_by, args.per_category, args.seed, output_dir / "rew_data", world_size * args.num_workers,
    )


def rew_hooks(rew: ReWeighting, is_main: bool) -> MethodHooks:
    return MethodHooks(
        metrics=lambda: {**rew.tally.overall, "diysink/sinks_per_image": rew.backbone.slots.sinks_per_image},
        board_metrics=rew.tally.metrics,
        extra_save=lambda directory: save_rew(rew, directory / "rew", is_main),
        final_save=lambda directory: save_rew(rew, directory / "rew", is_main, plot=True),
        loss=rew.loss,
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    run = setup_run(args, "diysink-rew", trained_demo=True, demo_data=demo.rew_data, prepare_data=balanced(args))
    backbone = load_run_backbone(run)
    attach_dual_mlp(backbone, sink_first=not args.no_sink_first, connector_init=args.connector_init)
    if args.diysink_checkpoint:
        load_into_run(backbone, args.diysink_checkpoint, run.is_main)
    backbone.model.requires_grad_(False)
    zero3 = run.keep_alive[0] if run.keep_alive else None
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    encoder = SentenceEncoder(args.sentence_encoder, device, zero3)
    rew = ReWeighting(backbone, encoder, args.hidden)
    rew.standardize_on(run.shards)
    fit(run, backbone, args.template, rew_hooks(rew, run.is_main))


if __name__ == "__main__":
    main_guard(main)
