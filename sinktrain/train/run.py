"""Everything a run decides before training: ranks, model and data, output dir, DeepSpeed config.

All checks that can fail on bad input (model type, sink profile, shards, world size, ds_config)
happen here, before any data worker starts or any weight is loaded.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from transformers import set_seed

from sinktrain import demo
from sinktrain.backbones.registry import backbone_class, load_backbone, load_config, resolve_profile
from sinktrain.data.order import check_lanes
from sinktrain.data.shard_index import shard_sizes
from sinktrain.data.stream import expand_shards
from sinktrain.errors import SinkTrainError
from sinktrain.log import setup_logging
from sinktrain.train import checkpoint
from sinktrain.train.distributed import init_distributed
from sinktrain.train.elastic import enable_universal_loading
from sinktrain.train.resume_checks import check_resumable, data_identity, ranks_and_accumulation, run_lanes
from sinktrain.train.ds_config import RunSettings, load_ds_config, resolve_ds_config, settings_from_config, zero_stage

logger = logging.getLogger("sinktrain")
DATA_INDEX = "data_index.json"  # samples per shard, counted once per run directory


@dataclass
class Run:
    args: object
    rank: int
    world_size: int
    model: str
    shards: list[str]
    sizes: list[int]  # samples per shard (sinktrain.data.shard_index)
    data: dict  # what a checkpoint records of --data (sinktrain.train.resume_checks.data_identity)
    output_dir: Path
    ds_config: dict
    settings: RunSettings
    resume_from: tuple[Path, str] | None
    resume_ranks: int | None  # how many ranks wrote the checkpoint resumed from
    recipe: str = ""
    keep_alive: list = field(default_factory=list)  # HfDeepSpeedConfig must outlive from_pretrained

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.settings.precision, torch.float32)

    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(value):
    """Rank 0's value on every rank (output dir names, build results)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main_first(build):
    """Run ``build()`` on rank 0, then on the others (which then find rank 0's cached result). A
    SinkTrainError on rank 0 is raised on every rank (the others would wait for it forever)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    result, error = None, None
    if rank == 0:
        try:
            result = build()
        except SinkTrainError as err:
            error = str(err)
    error = broadcast(error)  # also the barrier: the others go on once rank 0 is done
    if error is not None:
        raise SinkTrainError(error)
    return build() if rank != 0 else result


def default_output_dir(recipe: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe}-{stamp}"


def run_settings(args, output_dir: Path, hidden_size: int, max_steps: int) -> RunSettings:
    precision = args.precision or ("bf16" if torch.cuda.is_available() else "fp32")
    return RunSettings(
        per_device_batch_size=args.per_device_batch_size, grad_accum=args.grad_accum, lr=args.lr,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, max_steps=max_steps,
        max_grad_norm=args.max_grad_norm, precision=precision, output_dir=str(output_dir), hidden_size=hidden_size,
    )


def resolve_config(args, output_dir: Path, hidden_size: int, world_size: int, samples: int) -> tuple[dict, RunSettings]:
    raw = load_ds_config(args.ds_config)
    fields = {f.name for f in dataclasses.fields(RunSettings)}
    explicit = (set(args.explicit) & fields) | ({"max_steps"} if args.max_steps else set())
    if args.max_steps is None or args.save_every_epoch:  # steps from epochs once the config's global batch is known
        probe_run = run_settings(args, output_dir, hidden_size, max_steps=1)
        probe = settings_from_config(resolve_ds_config(raw, probe_run, explicit, world_size), probe_run)
        steps_per_epoch = samples / probe.global_batch(world_size)
        if args.max_steps is None:
            args.max_steps = max(1, math.ceil(args.num_epochs * steps_per_epoch))
        if args.save_every_epoch:
            args.save_every = max(1, math.ceil(steps_per_epoch))
    run = run_settings(args, output_dir, hidden_size, args.max_steps)
    config = resolve_ds_config(raw, run, explicit, world_size)
    return config, settings_from_config(config, run)


def enable_zero3_loading(config: dict, keep_alive: list) -> None:
    """Make ``from_pretrained`` partition weights at load time (transformers' DeepSpeed integration: HfDeepSpeedConfig must be alive before the call)."""
    if zero_stage(config) == 3:
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive.append(HfDeepSpeedConfig(config))


def check_model_choices(args, model: str):
    """Model type, sink profile, template and image flags checked on the config, before any weight loads."""
    config = load_config(model)
    family = backbone_class(config)
    profile = resolve_profile(model, config, args.sink_profile)
    if getattr(args, "sink_rule", None):  # DIYSink recipes choose the paper's V-sink rule
        profile.with_rule(args.sink_rule)
    family.check_template(args.template)
    family.check_pixel_limits(args.min_pixels, args.max_pixels)
    return config


def setup_run(
    args, recipe: str, trained_demo: bool = False, demo_data: Callable[[str | None], str] = demo.training_data,
    prepare_data: Callable[[list[str], Path, int], list[str]] | None = None,
) -> Run:
    """``trained_demo``: a demo --model (or none) means the family's trained demo variant (LSG);
    ``demo_data``: the shards a run without --data trains on, given --model; ``prepare_data``:
    (shards, output dir, world size) -> the shards to train on, run by rank 0 first, then by the
    others, who must find its result (e.g. ReW's category-balanced subset)."""
    rank, world_size = init_distributed()
    set_seed(args.seed)  # new modules (gates, DualMLP) start the same on every rank and in every run
    setup_logging(rank)
    model = on_main_first(lambda: demo.resolve(args.model, trained=trained_demo))
    data = args.data or on_main_first(lambda: demo_data(args.model))
    config = check_model_choices(args, model)
    shards = expand_shards(data)
    output_dir = Path(broadcast(str(args.output_dir or default_output_dir(recipe))))
    if prepare_data is not None:
        shards = on_main_first(lambda: prepare_data(shards, output_dir, world_size))
    sizes = on_main_first(lambda: shard_sizes(shards, output_dir / DATA_INDEX))
    ds_config, settings = resolve_config(args, output_dir, config.text_config.hidden_size, world_size, sum(sizes))
    identity = data_identity(data, shards, sizes)
    resume_from = checkpoint.resolve_resume(args.resume, output_dir)
    saved_ranks, saved = None, None
    if resume_from is not None:
        saved, where = checkpoint.read_state(*resume_from), resume_from[0] / resume_from[1]
        saved_ranks, accum = ranks_and_accumulation(saved, where, world_size, settings, typed="grad_accum" in args.explicit)
        if accum != settings.grad_accum:  # another number of ranks: the same global batch
            args.grad_accum, args.explicit = accum, set(args.explicit) | {"grad_accum"}
            ds_config, settings = resolve_config(args, output_dir, config.text_config.hidden_size, world_size, sum(sizes))
        check_resumable(saved, where, settings.global_batch(world_size), identity)
        if saved_ranks != world_size:
            enable_universal_loading(ds_config)
    check_lanes(sum(sizes), run_lanes(saved, args.data_lanes, world_size, args.num_workers))  # before any weight loads
    if args.resume is None and checkpoint.latest(output_dir / "checkpoints"):
        raise SinkTrainError(
            f"{output_dir} already holds checkpoints; pass --resume auto to continue that run, or choose a "
            "new --output_dir (nothing was overwritten)"
        )
    run = Run(args, rank, world_size, model, shards, sizes, identity, output_dir, ds_config, settings, resume_from, saved_ranks, recipe)
    enable_zero3_loading(ds_config, run.keep_alive)
    if run.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "ds_config.json").write_text(json.dumps(ds_config, indent=2))
    logger.info("run: %s | model %s | %d shards | %d ranks | %d steps | output %s", recipe, model, len(shards), world_size, settings.max_steps, output_dir)
    return run


def load_run_backbone(run: Run):
    """The run's backbone, in the run's precision, with its image flags applied."""
    backbone = load_backbone(run.model, run.args.sink_profile, dtype=run.dtype)
    backbone.set_pixel_limits(run.args.min_pixels, run.args.max_pixels)
    if getattr(run.args, "sink_rule", None):
        backbone.sink_profile = backbone.sink_profile.with_rule(run.args.sink_rule)
        profile = backbone.sink_profile
        logger.info("V-sinks: %s >= %g", "||h||_2" if profile.criterion == "l2_norm" else f"max |h[{profile.vit_dims}]|", profile.tau_v)
    return backbone
