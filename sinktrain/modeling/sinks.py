"""V-sink and L-sink identification: pure tensor functions (no model, no state).

Definitions follow Sun et al. 2024 ("Massive Activations in LLMs"), DIYSink ("To Sink or Not to Sink") and LSG ("When Sinks Help or Hurt", Sec. 3.1-3.2):

* V-sink (ViT-emerged): visual token i with ``max_{d in dims} |h_i[d]| >= tau`` (dimension-threshold
  criterion, LSG) or ``||h_i||_2 >= tau`` (L2-norm criterion, DIYSink), read at the vision layer
  that feeds the connector.
* L-sink (LLM-emerged): a visual token that is not a V-sink and whose LLM hidden state has
  ``max_{d in dims} |rmsnorm(h)[d]| >= tau`` (VAR applies RMSNorm without weight first).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

CRITERIA = ("dim_threshold", "l2_norm")


@dataclass(frozen=True)
class SinkRule:
    """What the forward needs to find sinks: the model-side part of a sink profile (sinktrain's
    SinkProfile has these fields and more; an export stores this part in its config)."""

    criterion: str
    tau_v: float
    vit_dims: list[int] = field(default_factory=list)
    llm_dims: list[int] = field(default_factory=list)
    tau_l: float | None = None
    llm_rms_norm: bool = True
    sink_branch: str = "low_res"  # DeepSeek-VL-Hybrid: V-sinks of "low_res", "high_res" or "either"
    high_res_dims: list[int] = field(default_factory=list)
    tau_high_res: float | None = None

    @classmethod
    def of(cls, profile) -> "SinkRule":
        """The rule of any object with these fields (a SinkProfile, or a dict from a config)."""
        get = profile.get if isinstance(profile, dict) else lambda name, default: getattr(profile, name, default)
        return cls(**{f.name: get(f.name, None) for f in dataclasses.fields(cls) if get(f.name, None) is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def dim_threshold_mask(hidden: torch.Tensor, dims: list[int], tau: float) -> torch.Tensor:
    """True where any sink channel's magnitude reaches ``tau``. hidden: (..., D) -> (...)."""
    if not dims:
        raise ValueError("dim_threshold_mask needs at least one sink dimension")
    index = torch.as_tensor(dims, device=hidden.device)
    return hidden.index_select(-1, index).abs().amax(dim=-1) >= tau


def l2_norm_mask(hidden: torch.Tensor, tau: float) -> torch.Tensor:
    """True where the token's L2 norm reaches ``tau``. hidden: (..., D) -> (...)."""
    # Norms of massive-activation tokens overflow fp16; compute in fp32.
    return hidden.float().norm(dim=-1) >= tau


def v_sink_mask(hidden: torch.Tensor, criterion: str, tau: float, dims: list[int] | None = None) -> torch.Tensor:
    """V-sink mask over vision features (batch, tokens, D) -> (batch, tokens) bool."""
    if criterion == "dim_threshold":
        return dim_threshold_mask(hidden, dims or [], tau)
    if criterion == "l2_norm":
        return l2_norm_mask(hidden, tau)
    raise ValueError(f"unknown sink criterion {criterion!r}; use one of {CRITERIA}")


def rms_normalize(hidden: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm without weight, as VAR applies before thresholding LLM hidden states."""
    h = hidden.float()
    return h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)


def l_sink_mask(
    hidden: torch.Tensor,
    visual_mask: torch.Tensor,
    v_sinks: torch.Tensor,
    dims: list[int],
    tau: float,
    rms_norm: bool = True,
) -> torch.Tensor:
    """L-sinks among visual tokens of one LLM layer's hidden state (batch, seq, D) -> (batch, seq).

    ``visual_mask`` marks visual positions in the sequence, ``v_sinks`` the visual positions
    that are V-sinks (both (batch, seq) bool): an L-sink is visual, not a V-sink, and massive.
    """
    h = rms_normalize(hidden) if rms_norm else hidden
    return dim_threshold_mask(h, dims, tau) & visual_mask & ~v_sinks


def sink_first_order(sink_mask: torch.Tensor) -> torch.Tensor:
    """Per-row permutation putting sink tokens first, then non-sinks, each in original order.

    (batch, tokens) bool -> (batch, tokens) long; ``x.gather(1, perm)`` applies it.
    """
    tokens = sink_mask.shape[-1]
    position = torch.arange(tokens, device=sink_mask.device).expand_as(sink_mask)
    # Sinks get keys 0..T-1, non-sinks T..2T-1: a stable argsort keeps order within each group.
    key = position + (~sink_mask).long() * tokens
    return key.argsort(dim=-1, stable=True)
