"""What a run chooses (RunSettings), the constants the DeepSpeed config modules share, checks on a
run's settings, and the small helpers that read and write a config's dotted key paths."""

from __future__ import annotations

import dataclasses
import json
import math
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

    def global_batch(self, world_size: int) -> int:
        return self.per_device_batch_size * self.grad_accum * world_size


# --- checks -------------------------------------------------------------------------------------


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


# --- key paths ----------------------------------------------------------------------------------


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
