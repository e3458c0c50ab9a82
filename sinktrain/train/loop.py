"""The one DeepSpeed training loop every recipe hands its backbone and method to.

``fit`` wraps the backbone in DeepSpeed (ZeRO stage, optimizer, scheduler, precision and batch
sizes all from the resolved ds_config), streams batches, logs progress and TensorBoard on rank 0,
checks the broken-sample budget on every step (all ranks agree, so all stop together), and
saves atomic checkpoints that ``--resume auto`` continues from: weights, optimizer, scheduler,
step and data position.
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import deepspeed
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from sinktrain.backbones.base import Backbone
from sinktrain.data.batch import Batch
from sinktrain.data.stream import ShardStream
from sinktrain.data.stream_state import StreamState
from sinktrain.errors import SinkTrainError
from sinktrain.train import checkpoint
from sinktrain.train.progress import Progress
from sinktrain.train.elastic import UNIVERSAL_TAG, convert_to_universal
from sinktrain.train.run import Run, barrier, on_main_first
from sinktrain.train.run_record import write_run_record
from sinktrain.train.stop import StopSignals, ignore_stop_signals
from sinktrain.train.zero import full_numel, is_partitioned, local_numel

logger = logging.getLogger("sinktrain")
MIN_SAMPLES_FOR_BAD_CHECK = 100  # a single early broken sample should not stop a run


class BatchForward(nn.Module):
    """What DeepSpeed wraps: the backbone's model, called on a collated batch, returning the loss
    (the stock model's, or the method's own ``loss``)."""

    def __init__(self, backbone: Backbone, loss: Callable[[Batch], torch.Tensor] | None = None):
        super().__init__()
        self.model = backbone.model
        self.backbone = [backbone]  # a list, so the backbone is not registered twice as a module
        self.loss = loss or (lambda batch: backbone.forward(batch).loss)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss(batch)


def partition_report(model: nn.Module) -> dict:
    params = list(model.parameters())
    return {
        "parameters": len(params),
        "partitioned": sum(is_partitioned(p) for p in params),
        "local_elements": sum(local_numel(p) for p in params),
        "full_elements": sum(full_numel(p) for p in params),
        "trainable_elements": sum(full_numel(p) for p in params if p.requires_grad),
    }


def data_loader(run: Run, backbone: Backbone, template: str, resume: StreamState | None) -> DataLoader:
    args, settings = run.args, run.settings
    encoder = backbone.encoder(template, args.max_length, args.on_overflow)
    encoder.category_field = getattr(args, "balance_by", None) or "category"
    encoder.one_example_per_turn = getattr(args, "multi_turn", "joint") == "split"  # LSG (sinktrain.data.turns)
    stream = ShardStream(
        run.shards, encoder, run.rank, run.world_size, args.num_workers, args.seed, args.shuffle_buffer, resume,
        micro_batch=settings.per_device_batch_size, lanes=args.data_lanes, sizes=run.sizes,
    )
    return DataLoader(
        stream, batch_size=settings.per_device_batch_size, num_workers=args.num_workers,
        collate_fn=backbone.collator(), worker_init_fn=ignore_stop_signals,
    )


def gather_stream_state(local: StreamState) -> StreamState:
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, local.to_dict())
    merged = StreamState(local.lanes, local.micro_batch)
    for state in states:
        merged.merge(StreamState.from_dict(state))
    return merged


def check_bad_fraction(seen: float, bad: float, limit: float) -> None:
    if seen >= MIN_SAMPLES_FOR_BAD_CHECK and bad > limit * seen:
        raise SinkTrainError(
            f"{int(bad)} of {int(seen)} samples ({bad / seen:.1%}) were broken or unusable, more than "
            f"--max_bad_fraction {limit:.1%}; the log names each one's shard and key: fix or regenerate "
            "those shards (tools/make_shards.py), or raise --max_bad_fraction"
        )


def save_checkpoint(run: Run, engine, step: int, local: StreamState, extra_save) -> Path:
    stream = gather_stream_state(local)
    global_batch = run.settings.global_batch(run.world_size)
    stream.micro_batches = step * global_batch // stream.micro_batch  # the job's, whatever its ranks
    state = {"step": step, "world_size": run.world_size, "global_batch": global_batch, "data": run.data, "stream": stream.to_dict()}

    def write(root: Path, tag: str) -> None:
        engine.save_checkpoint(str(root), tag=tag, save_latest=False)
        extra_save(root / tag)  # method artefacts (e.g. LSG gates) land in the same atomic checkpoint

    path = checkpoint.save(run.checkpoint_root, step, write, state, run.args.keep_checkpoints, run.is_main, barrier)
    logger.info("saved checkpoint %s", path)
    return path


def restore(run: Run, engine) -> tuple[int, StreamState | None]:
    if run.resume_from is None:
        if run.args.resume == "auto":
            logger.info("--resume auto: no checkpoint in %s yet, starting fresh", run.checkpoint_root)
        return 0, None
    root, tag = run.resume_from
    state = checkpoint.read_state(root, tag)
    if run.resume_ranks != run.world_size:  # elastic: DeepSpeed's universal checkpoint, converted once on rank 0
        root, tag = on_main_first(lambda: convert_to_universal(*run.resume_from, run.output_dir)), UNIVERSAL_TAG
    load_path, _ = engine.load_checkpoint(str(root), tag=tag)
    if load_path is None:
        raise SinkTrainError(f"DeepSpeed could not load checkpoint {root / tag}; it may be from another model or ZeRO stage")
    logger.info("resumed from %s at step %d", root / tag, state["step"])
    return state["step"], StreamState.from_dict(state["stream"])


def write_run_info(run: Run, info: dict) -> None:
    everyone = [None] * run.world_size
    dist.all_gather_object(everyone, info)
    if run.is_main:
        (run.output_dir / "run_info.json").write_text(json.dumps({"ranks": everyone}, indent=2))


@dataclass
class RankTally:
    """What this rank ran, for run_info.json: micro-batches, and samples by their number of images
    (0 = text-only), which shows that one run mixed single-image, multi-image and text-only samples."""

    micro_batches: int = 0
    samples_by_images: dict[int, int] = field(default_factory=dict)
    stopped_at: int | None = None  # the step a stop signal ended the run at (None: it ran to the end)

    def add(self, batch) -> None:
        self.micro_batches += 1
        for count in batch.images_per_sample.tolist():
            self.samples_by_images[count] = self.samples_by_images.get(count, 0) + 1

    def to_dict(self) -> dict:
        return {"micro_batches": self.micro_batches, "samples_by_images": dict(sorted(self.samples_by_images.items())), "stopped_at": self.stopped_at}


def train_steps(run: Run, engine, loader: DataLoader, start_step: int, stream: StreamState, progress: Progress,
                hooks: "MethodHooks", stop: StopSignals) -> RankTally:
    settings, args = run.settings, run.args
    batches = iter(loader)
    tally = RankTally()
    for step in range(start_step + 1, settings.max_steps + 1):
        loss_sum = 0.0
        for _ in range(settings.grad_accum):
            batch, positions = next(batches)
            for lane, index, bad, part, parts in positions:
                stream.update(lane, index, bad, part, parts)
            tally.add(batch)
            loss = engine(batch.to(engine.device))
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
        consumed, bad = stream.totals()
        totals = torch.tensor([loss_sum / settings.grad_accum, consumed, bad, stop.requested], dtype=torch.float64)
        dist.all_reduce(totals)  # the stop flag rides along: every rank stops after the same step
        check_bad_fraction(totals[1].item(), totals[2].item(), args.max_bad_fraction)
        show = step % args.log_every == 0 or step == settings.max_steps
        board = hooks.board_metrics()  # first: a method may sum up its step there (ReW's overall weights)
        progress.log(step, totals[0].item() / run.world_size, engine.get_lr()[0], int(totals[2].item()), show, hooks.metrics(), board)
        stopping = totals[3].item() > 0
        if step % args.save_every == 0 or step == settings.max_steps or stopping:
            save_checkpoint(run, engine, step, stream, hooks.extra_save)
        if stopping and step < settings.max_steps:
            tally.stopped_at = step
            logger.warning("stopped at step %d on a signal; --resume auto continues from its checkpoint", step)
            break
    return tally


EXPORT_DIR = "hf"  # --export_model's directory in the run's output dir


@dataclass
class MethodHooks:
    """What a method adds to the shared loop."""

    # tag -> float (a scalar) or 1-D tensor (a histogram, its mean shown in the progress line)
    metrics: Callable[[], dict] = dict
    # more of them for TensorBoard only (e.g. ReW's weights per category)
    board_metrics: Callable[[], dict] = dict
    # called on every rank with each checkpoint's staging directory, before it is published
    extra_save: Callable[[Path], None] = lambda directory: None
    # called on every rank with the output directory after the last step (e.g. the final gates)
    final_save: Callable[[Path], None] = lambda directory: None
    # the training loss of a collated batch; None: the stock model's next-token loss
    loss: Callable[[Batch], torch.Tensor] | None = None


def fit(run: Run, backbone: Backbone, template: str, hooks: MethodHooks | None = None) -> Path:
    """Train until ``max_steps`` and return the final checkpoint's directory."""
    hooks = hooks or MethodHooks()
    write_run_record(run, backbone)  # what the converter needs besides the weights
    model = BatchForward(backbone, hooks.loss)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise SinkTrainError("nothing to train: every parameter is frozen")
    at_load = partition_report(model)  # ZeRO-3 must partition in from_pretrained, not only here
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=trainable, config=run.ds_config)
    report = partition_report(model)
    logger.info(
        "ZeRO-%d: %d of %d parameters partitioned; this rank holds %.2fM of %.2fM elements; %.2fM trainable",
        engine.zero_optimization_stage(), report["partitioned"], report["parameters"],
        report["local_elements"] / 1e6, report["full_elements"] / 1e6, report["trainable_elements"] / 1e6,
    )
    start_step, resume_state = restore(run, engine)
    loader = data_loader(run, backbone, template, resume_state)
    stream = StreamState.from_dict(loader.dataset.resume.to_dict())  # the loop's own copy
    settings = run.settings
    progress = Progress(
        settings.max_steps, start_step, settings.global_batch(run.world_size),
        tensorboard_dir(run), run.is_main,
    )
    stop = StopSignals()  # in each rank's main process; its data workers ignore the signals (worker_init_fn)
    try:
        tally = train_steps(run, engine, loader, start_step, stream, progress, hooks, stop)
    finally:
        progress.close()
        stop.restore()
    finished = tally.stopped_at is None
    if finished:
        hooks.final_save(run.output_dir)
    end = settings.max_steps if finished else tally.stopped_at
    write_run_info(run, {"rank": run.rank, "start_step": start_step, "end_step": end, **tally.to_dict(), "zero": report, "zero_at_load": at_load})
    release(engine)
    final = run.checkpoint_root / checkpoint.step_tag(end)
    if finished and run.args.export_model and run.is_main:  # after the others were released: they need not wait
        export_final(run)
    outcome = "done" if finished else f"stopped at step {end} of {settings.max_steps}"
    logger.info("%s: checkpoint %s | TensorBoard: tensorboard --logdir %s", outcome, final, tensorboard_dir(run))
    return final


def export_final(run: Run) -> None:
    """The final checkpoint as a Hugging Face model in {output_dir}/hf, by tools/convert_to_hf.py's exporter."""
    from sinktrain.export.convert import ExportOptions, export_run

    out = export_run(run.output_dir, run.output_dir / EXPORT_DIR, ExportOptions(step=run.settings.max_steps, overwrite=True))
    logger.info("exported the final model to %s (tools/convert_to_hf.py --push_to_hub uploads it)", out)


def release(engine) -> None:
    """Let go of ZeRO-3's hooks, buffers and in-flight collectives while every rank is still here:
    work left to the interpreter's exit can abort a rank after training has ended (the data
    workers already stopped when train_steps dropped their iterator)."""
    engine.destroy()
    gc.collect()
    barrier()


def tensorboard_dir(run: Run) -> str | None:
    board = run.ds_config.get("tensorboard", {})
    if not board.get("enabled"):
        return None
    return str(Path(board["output_path"]) / board.get("job_name", "sinktrain"))
