"""ZeRO-3 helpers: create and edit modules whose parameters may be partitioned across ranks.

Outside ZeRO-3 (plain CPU tests, ZeRO-2) both helpers reduce to their obvious meaning, so
methods call them unconditionally.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers.integrations import deepspeed_config, is_deepspeed_zero3_enabled


def init_context():
    """Context in which new modules are born partitioned when ZeRO-3 is on (else a no-op)."""
    if is_deepspeed_zero3_enabled():
        import deepspeed

        return deepspeed.zero.Init(config_dict_or_path=deepspeed_config())
    return contextlib.nullcontext()


def gathered(parameters, modifier_rank: int | None = None):
    """Full parameters for the duration of the block; rank ``modifier_rank``'s edits persist."""
    parameters = list(parameters)
    if parameters and hasattr(parameters[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(parameters, modifier_rank=modifier_rank)
    return contextlib.nullcontext()


@torch.no_grad()
def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """target <- source, parameter by parameter (same architecture), partitioned or not."""
    pairs = list(zip(source.parameters(), target.parameters(), strict=True))
    with gathered([p for pair in pairs for p in pair], modifier_rank=0):
        for src, dst in pairs:
            dst.data.copy_(src.data)


@torch.no_grad()
def load_state(target: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a (full) state dict into a possibly partitioned module."""
    params = dict(target.named_parameters())
    with gathered(params.values(), modifier_rank=0):
        for name, param in params.items():
            param.data.copy_(state[name])


@torch.no_grad()
def load_full_state(module: nn.Module, state: dict[str, torch.Tensor] | None) -> None:
    """Load a full state dict held by rank 0 alone (None elsewhere) into a possibly partitioned
    module, one parameter at a time (never more than one gathered); every rank must call it."""
    for name, param in module.named_parameters():
        with gathered([param], modifier_rank=0):
            if state is not None:
                param.data.copy_(state[name])


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's full fp32 weights and saved buffers on CPU; a ZeRO-3 gather, so call it on every rank."""
    params = dict(module.named_parameters())
    saved = module.state_dict().keys()  # buffers ZeRO-3 never partitions, the non-persistent left out
    buffers = {name: buffer for name, buffer in module.named_buffers() if name in saved}
    with gathered(params.values()):
        return {name: tensor.detach().float().cpu().clone() for name, tensor in {**params, **buffers}.items()}


def is_partitioned(parameter: torch.Tensor) -> bool:
    return hasattr(parameter, "ds_id")


def local_numel(parameter: torch.Tensor) -> int:
    """Elements this rank stores for a parameter (its ZeRO-3 shard, or all of it)."""
    return parameter.ds_tensor.numel() if is_partitioned(parameter) else parameter.numel()


def full_numel(parameter: torch.Tensor) -> int:
    return parameter.ds_numel if is_partitioned(parameter) else parameter.numel()
