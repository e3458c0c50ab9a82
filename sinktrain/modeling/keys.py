"""Key scaling as pure tensor functions: which group each token is in, and its key's scale.

Group ids per sequence position: ``TEXT`` (-1) keeps scale 1; visual tokens take their group's
coefficient. 2 groups: 0 = V-sink, 1 = every other visual token. 3 groups: 0 = V-sink,
1 = L-sink (at this layer), 2 = ordinary visual token.
"""

from __future__ import annotations

import torch

TEXT = -1
V_SINK, REST = 0, 1  # 2-group ids
L_SINK, ORDINARY = 1, 2  # 3-group ids (V_SINK stays 0)


def visual_groups(visual: torch.Tensor, v_sinks: torch.Tensor) -> torch.Tensor:
    """(B, T) bool masks -> (B, T) 2-group ids: TEXT, V_SINK or REST."""
    groups = torch.full(visual.shape, TEXT, dtype=torch.long, device=visual.device)
    groups[visual] = REST
    groups[visual & v_sinks] = V_SINK
    return groups


def three_groups(two_groups: torch.Tensor, l_sinks: torch.Tensor) -> torch.Tensor:
    """Split REST into L_SINK / ORDINARY given this layer's L-sink mask (B, T)."""
    groups = two_groups.clone()
    groups[two_groups == REST] = ORDINARY
    groups[(two_groups == REST) & l_sinks] = L_SINK
    return groups


def key_scale(groups: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """(B, T) group ids and (B, G) coefficients -> (B, T) per-token key scale (1 for text)."""
    picked = coefficients.gather(1, groups.clamp(min=0))
    return torch.where(groups == TEXT, torch.ones_like(picked), picked)
