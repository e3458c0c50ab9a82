"""Filling a DeepSpeed config's "auto" values from a run: `resolve_ds_config` and its steps.

"auto" takes the run's value, a key sinktrain fills but the file leaves out counts as "auto", a
concrete value beats a flag the user did not set, and a clash with a flag the user did set is an
error (the rules in full: sinktrain.train.ds_config).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any

from sinktrain.errors import SinkTrainError
from sinktrain.train.ds_settings import (
    AUTO,
    DS_CONFIG_DIR,
    FLAG_NAMES,
    RunSettings,
    _auto_paths,
    _check_positive_int,
    _check_run,
    _get,
    _precision_of,
    _set,
    _warmup_steps,
)

# Config keys that hold a run flag's value directly: (key path, RunSettings field).
_FLAG_KEYS = (
    ("train_micro_batch_size_per_gpu", "per_device_batch_size"),
    ("gradient_accumulation_steps", "grad_accum"),
    ("gradient_clipping", "max_grad_norm"),
    ("optimizer.params.lr", "lr"),
    ("optimizer.params.weight_decay", "weight_decay"),
)

# transformers' "auto" rule for ZeRO sizes, from the LLM's hidden size h: buckets of one h x h
# matrix move as one collective; parameters under 10*h elements stay unpartitioned under ZeRO-3.
# DeepSpeed accepts each stage-3 key with or without its "stage3_" prefix.
_HIDDEN_SIZE_RULES = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
    "param_persistence_threshold": lambda h: 10 * h,
}

# Scheduler params that are no run flag. "auto" gives LLaVA's shape (transformers' cosine
# schedule): linear warmup from 0 to lr, then decay to 0. DeepSpeed's own defaults differ
# (log warmup, cosine floor 1e-4), so these are spelled out rather than left to it.
_SCHEDULER_CONSTANTS = {
    "WarmupCosineLR": {"warmup_type": "linear", "warmup_min_ratio": 0.0, "cos_min_ratio": 0.0},
    "WarmupDecayLR": {"warmup_type": "linear", "warmup_min_lr": 0.0},
    "WarmupLR": {"warmup_type": "linear", "warmup_min_lr": 0.0},
}
_SCHEDULERS_WITH_TOTAL = ("WarmupCosineLR", "WarmupDecayLR")
_SCHEDULERS_WITH_MAX_LR = ("WarmupDecayLR", "WarmupLR")


def resolve_ds_config(config: dict, run: RunSettings, explicit: set[str], world_size: int) -> dict:
    """Return a new config with every "auto" filled from `run`; `explicit` names flags the user set."""
    _check_run(run, explicit, world_size)
    res = _Resolution(copy.deepcopy(config), run, frozenset(explicit))
    _require_optimizer(res.config)
    _resolve_precision(res)
    _derive_accum(res, world_size)
    for path, field in _FLAG_KEYS:
        res.fill(path, getattr(run, field), field)
    _resolve_global_batch(res.config, world_size)
    _resolve_scheduler(res)
    _resolve_hidden_size_keys(res.config, run.hidden_size)
    res.fill_only("tensorboard.output_path", os.path.join(run.output_dir, "tensorboard"))
    _reject_leftover_autos(res.config)
    return res.config


# --- resolution steps ---------------------------------------------------------------------------


@dataclass
class _Resolution:
    """The config being filled, with the run it is filled from."""

    config: dict
    run: RunSettings
    explicit: frozenset

    def fill(self, path: str, value: Any, field: str) -> None:
        """Put the run's value at `path` unless the config has its own; refuse a clash with a set flag."""
        current = _get(self.config, path, AUTO)  # a key left out counts as "auto"
        if current == AUTO:
            _set(self.config, path, value)
        elif field in self.explicit and current != value:
            raise _conflict(path, current, field, getattr(self.run, field))

    def fill_only(self, path: str, value: Any) -> None:
        """Fill a derived key written "auto"; a concrete value or a missing key is left alone."""
        if _get(self.config, path) == AUTO:
            _set(self.config, path, value)


def _resolve_precision(res: _Resolution) -> None:
    for mode in ("bf16", "fp16"):
        res.fill(f"{mode}.enabled", res.run.precision == mode, "precision")
    _precision_of(res.config)  # both enabled is an error whichever way it came about


def _derive_accum(res: _Resolution, world_size: int) -> None:
    """A config that fixes train_batch_size and leaves gradient_accumulation_steps "auto" gets
    the accumulation that reaches it on this many ranks, as DeepSpeed itself derives it (the LSG
    paper's global batch 128 on any GPU count); a --grad_accum the user set is checked instead."""
    wanted, config = res.config.get("train_batch_size", AUTO), res.config
    if wanted == AUTO or _get(config, "gradient_accumulation_steps", AUTO) != AUTO or "grad_accum" in res.explicit:
        return
    micro = _get(config, "train_micro_batch_size_per_gpu", AUTO)
    micro = res.run.per_device_batch_size if micro == AUTO else micro
    if isinstance(wanted, int) and isinstance(micro, int) and micro > 0 and wanted % (micro * world_size) == 0:
        config["gradient_accumulation_steps"] = wanted // (micro * world_size)


def _resolve_global_batch(config: dict, world_size: int) -> None:
    """DeepSpeed asserts train_batch_size == micro x accum x ranks; check it here with a fix."""
    micro = config["train_micro_batch_size_per_gpu"]
    accum = config["gradient_accumulation_steps"]
    _check_positive_int("train_micro_batch_size_per_gpu in the DeepSpeed config", micro)
    _check_positive_int("gradient_accumulation_steps in the DeepSpeed config", accum)
    have = micro * accum * world_size
    wanted = config.get("train_batch_size", AUTO)
    if wanted == AUTO:
        config["train_batch_size"] = have
    elif wanted != have:
        raise SinkTrainError(_global_batch_message(wanted, micro, accum, world_size))


def _global_batch_message(wanted: Any, micro: int, accum: int, world_size: int) -> str:
    got = f"micro {micro} x accum {accum} x {world_size} ranks = {micro * accum * world_size}"
    per_accum = micro * world_size
    if isinstance(wanted, int) and wanted > 0 and wanted % per_accum == 0:
        need = wanted // per_accum
        return (
            f"train_batch_size {wanted} needs micro {micro} x accum {need} x {world_size} ranks = "
            f"{wanted}, but this run has {got}. Fix: set {FLAG_NAMES['grad_accum']} {need} "
            f"(gradient_accumulation_steps), or set \"train_batch_size\" to \"auto\" to follow "
            f"micro x accum x ranks."
        )
    return (
        f"train_batch_size {wanted} is not micro x accum x ranks: this run has {got}, and "
        f"{wanted} is not a multiple of micro {micro} x {world_size} ranks = {per_accum}. Fix: "
        f"pick {FLAG_NAMES['per_device_batch_size']} and a rank count whose product divides "
        f"{wanted}, or set \"train_batch_size\" to \"auto\"."
    )


def _resolve_scheduler(res: _Resolution) -> None:
    kind = _get(res.config, "scheduler.type")
    if kind is None:
        _refuse_unused_warmup(res)
        return
    params = "scheduler.params."
    max_steps = res.run.max_steps
    if kind in _SCHEDULERS_WITH_TOTAL:
        res.fill(params + "total_num_steps", max_steps, "max_steps")
        max_steps = _get(res.config, params + "total_num_steps")  # the config's value may win
    if kind in _SCHEDULER_CONSTANTS:
        res.fill(params + "warmup_num_steps", _warmup_steps(res.run.warmup_ratio, max_steps), "warmup_ratio")
        for name, value in _SCHEDULER_CONSTANTS[kind].items():
            res.fill_only(params + name, value)
    if kind in _SCHEDULERS_WITH_MAX_LR:
        _resolve_warmup_max_lr(res, params + "warmup_max_lr")


def _resolve_warmup_max_lr(res: _Resolution, path: str) -> None:
    """WarmupLR/WarmupDecayLR overwrite the optimizer's lr with warmup_max_lr, so the two must agree."""
    lr = res.config["optimizer"]["params"]["lr"]
    res.fill(path, lr, "lr")
    if _get(res.config, path) != lr:
        raise SinkTrainError(
            f"DeepSpeed config sets {path} = {json.dumps(_get(res.config, path))} but "
            f"optimizer.params.lr = {json.dumps(lr)}; this scheduler drives the lr to "
            f"warmup_max_lr, so the optimizer's lr would be ignored. Fix: set \"warmup_max_lr\" "
            f"to \"auto\" (it then follows the lr)."
        )


def _refuse_unused_warmup(res: _Resolution) -> None:
    if "warmup_ratio" in res.explicit and res.run.warmup_ratio > 0:
        raise SinkTrainError(
            f"{FLAG_NAMES['warmup_ratio']} {res.run.warmup_ratio} was given but the DeepSpeed "
            f"config has no \"scheduler\" section, so the lr stays constant and the flag would do "
            f"nothing. Fix: drop the flag, or add the \"scheduler\" block from "
            f"{DS_CONFIG_DIR / 'zero2.json'}."
        )


def _resolve_hidden_size_keys(config: dict, hidden_size: int | None) -> None:
    zero = config.get("zero_optimization")
    if not isinstance(zero, dict):
        return
    auto_keys = [key for key in _HIDDEN_SIZE_RULES if zero.get(key) == AUTO]
    if auto_keys and hidden_size is None:
        paths = ", ".join(f"zero_optimization.{key}" for key in auto_keys)
        raise SinkTrainError(
            f"DeepSpeed config has \"auto\" at {paths}, which is sized from the model's hidden "
            f"size, but none was given. Fix: set RunSettings.hidden_size (the LLM's hidden_size, "
            f"e.g. 4096 for a 7B LLaMA), or replace those \"auto\" values with integers."
        )
    for key in auto_keys:
        zero[key] = _HIDDEN_SIZE_RULES[key](hidden_size)


def _require_optimizer(config: dict) -> None:
    if not isinstance(_get(config, "optimizer.params"), dict):
        raise SinkTrainError(
            "DeepSpeed config has no \"optimizer\" section with \"params\"; sinktrain takes the "
            "optimizer and its lr and weight decay from the config. Fix: copy the \"optimizer\" "
            f"block from {DS_CONFIG_DIR / 'zero2.json'}."
        )


def _reject_leftover_autos(config: dict) -> None:
    leftovers = list(_auto_paths(config))
    if leftovers:
        raise SinkTrainError(
            f"DeepSpeed config has \"auto\" at {', '.join(leftovers)}, which sinktrain does not "
            f"know how to fill (it fills batch sizes, gradient_clipping, optimizer lr and "
            f"weight_decay, bf16/fp16, the WarmupCosineLR/WarmupDecayLR/WarmupLR params, ZeRO "
            f"bucket sizes and tensorboard.output_path). Fix: write a concrete value there."
        )


def _conflict(path: str, config_value: Any, field: str, run_value: Any) -> SinkTrainError:
    flag = FLAG_NAMES[field]
    return SinkTrainError(
        f"DeepSpeed config sets {path} = {json.dumps(config_value)} but {flag} "
        f"{json.dumps(run_value)} was given; sinktrain will not pick one silently. Fix: remove "
        f"{flag} to use the config's value, or set the key {path} to \"auto\" to use the flag."
    )
