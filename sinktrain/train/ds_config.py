"""Turn a ds_configs/*.json file plus a run's flags into the one DeepSpeed config that runs.

The files in ds_configs/ are the single source of truth for optimizer, scheduler, precision, ZeRO
stage, batch sizes and TensorBoard. What a run chooses (batch size, lr, steps, ...) is written
"auto" there and filled here, the way transformers' HfTrainerDeepSpeedConfig does it:

- "auto" takes the run's value; a key that sinktrain fills but the file leaves out counts as "auto";
- a concrete value in the file beats a flag the user did not set, and the returned config is what
  runs (read it back with `settings_from_config`);
- a concrete value that differs from a flag the user did set is an error, never a silent pick.

Usage, from a recipe:

    config = load_ds_config(args.ds_config)      # a path, or a shipped name such as "zero3"
    config = resolve_ds_config(config, run, explicit={"lr"}, world_size=world_size)
    run = settings_from_config(config, run)      # the loop reads steps, lr, ... from here on
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=config)

This module is the one to import from. It reads configs (`load_ds_config`) and reads them back
(`settings_from_config`, `zero_stage`); "auto" filling lives in sinktrain.train.ds_resolve, and
RunSettings with the shared constants and checks in sinktrain.train.ds_settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from sinktrain.errors import SinkTrainError
from sinktrain.train.ds_resolve import resolve_ds_config
from sinktrain.train.ds_settings import (
    AUTO,
    DS_CONFIG_DIR,
    FLAG_NAMES,
    PRECISIONS,
    RunSettings,
    _auto_paths,
    _get,
    _precision_of,
    _warmup_steps,
)

__all__ = [
    "AUTO",
    "DS_CONFIG_DIR",
    "FLAG_NAMES",
    "PRECISIONS",
    "RunSettings",
    "load_ds_config",
    "resolve_ds_config",
    "settings_from_config",
    "zero_stage",
]


def load_ds_config(path: str | os.PathLike) -> dict:
    """Read a DeepSpeed JSON config: a path, or the name of a shipped one ("zero3", "zero3.json")."""
    file = _find_config_file(path)
    try:
        config = json.loads(file.read_text(), object_pairs_hook=_reject_duplicate_keys(file))
    except json.JSONDecodeError as err:
        raise SinkTrainError(
            f"DeepSpeed config {file} is not valid JSON: {err.msg} at line {err.lineno}, "
            f"column {err.colno}. Fix: correct the file there (plain JSON: no comments, no "
            f"trailing commas, double-quoted keys)."
        ) from None
    if not isinstance(config, dict):
        raise SinkTrainError(
            f"DeepSpeed config {file} holds a JSON {type(config).__name__}, not an object. "
            f"Fix: the file must be one {{...}} object of DeepSpeed settings, as in {DS_CONFIG_DIR}."
        )
    return config


def settings_from_config(config: dict, run: RunSettings) -> RunSettings:
    """The RunSettings a resolved config actually runs with: its concrete values replace `run`'s."""
    leftovers = list(_auto_paths(config))
    if leftovers:
        raise SinkTrainError(
            f"DeepSpeed config still has \"auto\" at {', '.join(leftovers)}. "
            f"Fix: pass it through resolve_ds_config() before settings_from_config()."
        )
    max_steps = int(_get(config, "scheduler.params.total_num_steps", run.max_steps))
    return dataclasses.replace(
        run,
        per_device_batch_size=int(_get(config, "train_micro_batch_size_per_gpu", run.per_device_batch_size)),
        grad_accum=int(_get(config, "gradient_accumulation_steps", run.grad_accum)),
        lr=float(_get(config, "optimizer.params.lr", run.lr)),
        weight_decay=float(_get(config, "optimizer.params.weight_decay", run.weight_decay)),
        warmup_ratio=_warmup_ratio_of(config, run, max_steps),
        max_steps=max_steps,
        max_grad_norm=float(_get(config, "gradient_clipping", run.max_grad_norm)),
        precision=_precision_of(config),
    )


def zero_stage(config: dict) -> int:
    """The ZeRO stage a config asks for; 0 when it has no zero_optimization section."""
    stage = _get(config, "zero_optimization.stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise SinkTrainError(
            f"DeepSpeed config has zero_optimization.stage = {json.dumps(stage)}. "
            f"Fix: set it to 0, 1, 2 or 3 (sinktrain ships stage 2 and 3 configs in {DS_CONFIG_DIR})."
        )
    return stage


# --- reading helpers ----------------------------------------------------------------------------


def _warmup_ratio_of(config: dict, run: RunSettings, max_steps: int) -> float:
    steps = _get(config, "scheduler.params.warmup_num_steps")
    if steps is None or steps == _warmup_steps(run.warmup_ratio, max_steps):
        return run.warmup_ratio  # the run's ratio produced these steps (ceil does not invert)
    return steps / max_steps


def _find_config_file(path: str | os.PathLike) -> Path:
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    if candidate.parent == Path("."):  # a bare name: look among the shipped configs
        for name in (candidate.name, candidate.name + ".json"):
            if (DS_CONFIG_DIR / name).is_file():
                return DS_CONFIG_DIR / name
    raise SinkTrainError(f"no DeepSpeed config file at {path}. Fix: {_shipped_configs_hint()}")


def _shipped_configs_hint() -> str:
    names = sorted(p.name for p in DS_CONFIG_DIR.glob("*.json")) if DS_CONFIG_DIR.is_dir() else []
    if not names:
        return "pass the path of a DeepSpeed JSON file (the sinktrain repository's ds_configs/ has examples)."
    return f"pass a JSON file's path, or one of {', '.join(names)} from {DS_CONFIG_DIR}."


def _reject_duplicate_keys(file: Path):
    """JSON keeps the last of two equal keys without a word; DeepSpeed refuses them. Say so first."""

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise SinkTrainError(
                    f"DeepSpeed config {file} has the key {key!r} twice in one object. "
                    f"Fix: keep one of them."
                )
        return dict(pairs)

    return hook
