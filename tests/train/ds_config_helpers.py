"""Shared helpers of the ds_config tests (test_ds_config_files.py, test_ds_config_resolve.py):
the shipped config names, a LLaVA-like run, resolving with it, and reading an error message."""

import dataclasses

import pytest

from sinktrain.errors import SinkTrainError
from sinktrain.train.ds_config import DS_CONFIG_DIR, RunSettings, load_ds_config, resolve_ds_config

SCHEDULED = ["zero2.json", "zero3.json", "zero3_offload.json"]
SHIPPED = SCHEDULED + ["lsg_paper.json"]  # LSG paper: Adam, constant lr, global batch 128


def make_run(**changes) -> RunSettings:
    # LLaVA stage 2 on 8 GPUs: 16 per GPU x 1 accum x 8 = 128, lr 2e-5, warmup 3%.
    run = RunSettings(
        per_device_batch_size=16,
        grad_accum=1,
        lr=2e-5,
        weight_decay=0.0,
        warmup_ratio=0.03,
        max_steps=1000,
        max_grad_norm=1.0,
        precision="bf16",
        output_dir="/runs/llava",
        hidden_size=4096,
    )
    return dataclasses.replace(run, **changes)


def resolve(config, explicit=(), world_size=8, **run_changes):
    return resolve_ds_config(config, make_run(**run_changes), set(explicit), world_size)


def zero2():
    return load_ds_config(DS_CONFIG_DIR / "zero2.json")


def zero3():
    return load_ds_config(DS_CONFIG_DIR / "zero3.json")


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(SinkTrainError) as info:
        call(*args, **kwargs)
    return str(info.value)
