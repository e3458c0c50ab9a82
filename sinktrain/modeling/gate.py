"""LSG's per-layer gate: reads the last prompt token's hidden state, gives one coefficient per group.

``g_l = MLP_l(h_l^last)``: LayerNorm -> Linear(d, 64) -> GELU -> Linear(64, G) -> softmax, and
``c = G * r``. The last Linear starts at zero, so the softmax is uniform and every visual key is
scaled by exactly 1: the gated model starts as the stock model (LSG, "When Sinks Help or Hurt",
Sec. 4.2). With d = 4096, G = 2 a gate has ~0.27M parameters (the paper's ~262K counts the Linears).
"""

from __future__ import annotations

import torch
from torch import nn

GATE_HIDDEN = 64


class SinkGate(nn.Module):
    def __init__(self, hidden_size: int, groups: int = 2, gate_hidden: int = GATE_HIDDEN):
        super().__init__()
        self.groups = groups
        self.norm = nn.LayerNorm(hidden_size)
        self.up = nn.Linear(hidden_size, gate_hidden)
        self.act = nn.GELU()
        self.out = nn.Linear(gate_hidden, groups)
        self.make_neutral()

    def make_neutral(self) -> None:
        """Zero the last Linear: a uniform softmax, every coefficient exactly 1. (Under ZeRO-3 the
        Linear is born partitioned and this edits nothing: sinktrain.lsg.gating redoes it gathered.)"""
        with torch.no_grad():
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def ratios(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, G) softmax ratios r; r[:, 0] is r_sink."""
        logits = self.out(self.act(self.up(self.norm(last_hidden.to(self.up.weight.dtype)))))
        return logits.float().softmax(dim=-1)

    def forward(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, G) key coefficients c = G * r (all 1 at initialisation)."""
        return self.groups * self.ratios(last_hidden)
