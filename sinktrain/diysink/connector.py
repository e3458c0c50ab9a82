"""DIYSink's DualMLP connector: separate projectors for V-sink and non-sink visual tokens.

The LLM receives ``[w_sink * f_sink(V_sink) ; w_non * f_non(V_non)]`` per image: sink tokens
first, then non-sinks, each group in its original order. The token count per image is unchanged,
so the backbone's image-token slots (what the processor produced) still fit.
"""

from __future__ import annotations

import torch
from torch import nn

from sinktrain.backbones.profiles import SinkProfile
from sinktrain.sinks import sink_first_order, v_sink_mask


class DualMLPConnector(nn.Module):
    """Drop-in replacement for a backbone's projector, reading V-sinks from its input features."""

    def __init__(self, f_sink: nn.Module, f_non: nn.Module, profile: SinkProfile, sink_first: bool = True):
        super().__init__()
        self.f_sink = f_sink
        self.f_non = f_non
        self.criterion, self.tau, self.dims = profile.criterion, profile.tau_v, list(profile.vit_dims)
        self.sink_first = sink_first
        self.last_sinks_per_image = 0.0  # for progress logs: are V-sinks being found?

    def sink_mask(self, features: torch.Tensor) -> torch.Tensor:
        return v_sink_mask(features, self.criterion, self.tau, self.dims)

    def forward(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, N, D_vit) -> (B, N, D_llm); weights (B, 2) = [w_sink, w_non] or None."""
        mask = self.sink_mask(features)
        self.last_sinks_per_image = mask.sum(dim=1).float().mean().item()
        flat, flat_mask = features.reshape(-1, features.shape[-1]), mask.reshape(-1)
        # Both projectors run on every call, even on an empty token set: under ZeRO-3 every rank
        # must gather and reduce the same parameters on every step.
        sink_out = self.f_sink(flat[flat_mask])
        non_out = self.f_non(flat[~flat_mask])
        if weights is not None:
            per_token = weights.repeat_interleave(features.shape[1], dim=0)
            sink_out = sink_out * per_token[flat_mask, 0:1]
            non_out = non_out * per_token[~flat_mask, 1:2]
        out = non_out.new_zeros(flat.shape[0], non_out.shape[-1])
        out = out.masked_scatter(flat_mask.unsqueeze(-1), sink_out).masked_scatter(~flat_mask.unsqueeze(-1), non_out)
        out = out.reshape(*features.shape[:2], -1)
        if self.sink_first:
            order = sink_first_order(mask)
            out = out.gather(1, order.unsqueeze(-1).expand_as(out))
        return out
