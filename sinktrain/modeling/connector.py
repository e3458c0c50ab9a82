"""DIYSink's DualMLP connector: separate projectors for V-sink and non-sink visual tokens.

A drop-in replacement for a family's connector: ``f_sink`` and ``f_non`` are each a copy of the
whole connector (LLaVA's Linear-GELU-Linear; Qwen's merger, which takes the 2x2 patch rows of a
token). Each output token goes through exactly one of them: ``f_sink`` when the backbone's sink
rule flags it (``Backbone.token_sink_mask``, on this connector's input(s)), ``f_non`` otherwise. The
output has the stock connector's shape and order, so the model places it in the slots as usual;
sinks-first ordering is a permutation of slots (sinktrain.modeling.slots.sink_first_order),
applied where the LLM receives its inputs, so positions move with their tokens.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class DualMLPConnector(nn.Module):
    def __init__(self, f_sink: nn.Module, f_non: nn.Module, sink_mask: Callable[..., torch.Tensor], group: int):
        super().__init__()
        self.f_sink, self.f_non = f_sink, f_non
        self.sink_mask = sink_mask  # the connector's inputs -> (tokens,) bool, in its output order
        self.group = group  # input rows per output token

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """inputs (..., rows, D_i), one or several per token as the stock connector takes them
        (DeepSeek-VL-Hybrid: SigLIP's and SAM's) -> (..., rows / group, D_llm), as the stock connector."""
        mask = self.sink_mask(*inputs)
        first = inputs[0]
        lead = (*first.shape[:-2], first.shape[-2] // self.group)
        tokens = [features.reshape(-1, self.group, features.shape[-1]) for features in inputs]
        # Both projectors run on every call, even on an empty token set: under ZeRO-3 every rank
        # must gather and reduce the same parameters on every step.
        sink_out = self.f_sink(*(t[mask].flatten(0, 1) for t in tokens))
        non_out = self.f_non(*(t[~mask].flatten(0, 1) for t in tokens))
        out = non_out.new_zeros(tokens[0].shape[0], non_out.shape[-1])
        out = out.masked_scatter(mask.unsqueeze(-1), sink_out).masked_scatter(~mask.unsqueeze(-1), non_out)
        return out.reshape(*lead, -1)
