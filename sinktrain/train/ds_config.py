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
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sinktrain.errors import SinkTrainError

AUTO = "auto"
PRECISIONS = ("fp32", "bf16", "fp16")
DS_CONFIG_DIR = Path(__file__).resolve().parents[2] / "ds_configs"

# The command-line flag behind each RunSettings field, so messages name what the user typed.
FLAG_NAMES = {field: f"--{field}" for field in (
    "per_device_batch_size", "grad_accum", "lr", "weight_decay", "warmup_ratio", "max_steps",
    "max_grad_norm", "precision", "output_dir",
)}
FLAG_NAMES["hidden_size"] = "the model config's hidden_size"

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


@dataclass
class RunSettings:
    """What one run chooses; ds_configs hold everything else."""

    per_device_batch_size: int  # samples per rank per micro step (LLaVA stage 2: 16 on 8 GPUs)
    grad_accum: int  # micro steps per optimizer step
    lr: float  # peak lr after warmup (LLaVA: 1e-3 projector pretraining, 2e-5 finetuning)
    weight_decay: float  # AdamW decoupled decay (LLaVA: 0.0)
    warmup_ratio: float  # fraction of max_steps spent warming up (LLaVA: 0.03)
    max_steps: int  # optimizer steps, not micro steps
    max_grad_norm: float  # gradient clipping; 0 turns it off (LLaVA: 1.0)
    precision: str  # "fp32" | "bf16" | "fp16"
    output_dir: str  # checkpoints, logs; TensorBoard goes to {output_dir}/tensorboard
    hidden_size: int | None = None  # LLM width, sizes "auto" ZeRO buckets (LLaMA-7B: 4096)


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


def resolve_ds_config(config: dict, run: RunSettings, explicit: set[str], world_size: int) -> dict:
    """Return a new config with every "auto" filled from `run`; `explicit` names flags the user set."""
    _check_run(run, explicit, world_size)
    res = _Resolution(copy.deepcopy(config), run, frozenset(explicit))
    _require_optimizer(res.config)
    _resolve_precision(res)
    for path, field in _FLAG_KEYS:
        res.fill(path, getattr(run, field), field)
    _resolve_global_batch(res.config, world_size)
    _resolve_scheduler(res)
    _resolve_hidden_size_keys(res.config, run.hidden_size)
    res.fill_only("tensorboard.output_path", os.path.join(run.output_dir, "tensorboard"))
    _reject_leftover_autos(res.config)
    return res.config


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


# --- checks and small helpers -------------------------------------------------------------------


def _check_run(run: RunSettings, explicit: set[str], world_size: int) -> None:
    unknown = sorted(set(explicit) - {f.name for f in dataclasses.fields(RunSettings)})
    if unknown:
        raise SinkTrainError(
            f"explicit flags {unknown} are not RunSettings fields. Fix: name fields, one of "
            f"{sorted(FLAG_NAMES)}."
        )
    if run.precision not in PRECISIONS:
        raise SinkTrainError(
            f"{FLAG_NAMES['precision']} {run.precision!r} is not a precision. Fix: use one of "
            f"{', '.join(PRECISIONS)}."
        )
    for field in ("per_device_batch_size", "grad_accum", "max_steps"):
        _check_positive_int(FLAG_NAMES[field], getattr(run, field))
    _check_positive_int("world size", world_size)
    if not 0 <= run.warmup_ratio <= 1:
        raise SinkTrainError(
            f"{FLAG_NAMES['warmup_ratio']} {run.warmup_ratio} is outside [0, 1]. Fix: give the "
            f"fraction of steps to warm up for (LLaVA uses 0.03)."
        )


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SinkTrainError(f"{name} is {value!r}. Fix: give a whole number of at least 1.")


def _conflict(path: str, config_value: Any, field: str, run_value: Any) -> SinkTrainError:
    flag = FLAG_NAMES[field]
    return SinkTrainError(
        f"DeepSpeed config sets {path} = {json.dumps(config_value)} but {flag} "
        f"{json.dumps(run_value)} was given; sinktrain will not pick one silently. Fix: remove "
        f"{flag} to use the config's value, or set the key {path} to \"auto\" to use the flag."
    )


def _precision_of(config: dict) -> str:
    bf16 = _get(config, "bf16.enabled") is True
    fp16 = _get(config, "fp16.enabled") is True
    if bf16 and fp16:
        raise SinkTrainError(
            "DeepSpeed config enables both bf16 and fp16. Fix: set one of bf16.enabled and "
            f"fp16.enabled to false, or both to \"auto\" and choose with {FLAG_NAMES['precision']}."
        )
    return "bf16" if bf16 else "fp16" if fp16 else "fp32"


def _warmup_steps(warmup_ratio: float, max_steps: int) -> int:
    # transformers rounds up; DeepSpeed >= 0.19.6 rejects 0 warmup steps, so no-warmup runs get 1.
    return max(1, math.ceil(warmup_ratio * max_steps))


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


def _auto_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _auto_paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _auto_paths(value, f"{prefix}[{index}]")
    elif node == AUTO:
        yield prefix


def _get(config: dict, path: str, default: Any = None) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _set(config: dict, path: str, value: Any) -> None:
    *parents, key = path.split(".")
    node = config
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parents[: depth + 1])
            raise SinkTrainError(
                f"DeepSpeed config has {where} = {json.dumps(node)} where an object is needed to "
                f"hold {path}. Fix: make {where} a {{...}} object."
            )
    node[key] = value
