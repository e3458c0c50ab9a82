"""Visual-slot selection: the LLM sees only some of each image's slots (DIYSink's sink-only and
non-sink-only inputs, "To Sink or Not to Sink", Sec. 4).

The other visual slots are removed from the LLM's input, not masked: where the language model
starts (slots.py), the kept tokens move to the front of the sequence in their
order, each with its own position ids, and the rest of the sequence becomes right padding that
no token attends to. Attention then sees exactly what a sequence without those slots would hold
(RoPE depends only on the position ids a token carries). The language model's output is put
back at the kept tokens' places (zeros elsewhere), so the stock model's head runs unchanged;
``compacted_lm_loss`` is the next-token loss of the compacted sequence, each kept token
predicting the next kept one: what the stock loss would be on a sequence without the slots.
Layout slots (LLaVA-OneVision's row newlines) come from no connector, so both selections drop them.

Generation (``SlotTracker.select_by_mask``) masks the other slots out of attention instead
(``hide_slots``), in the prefill and in every decoding step: each kept token attends to the same
tokens at the same positions as in the compacted sequence, and the KV cache keeps its layout.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from .errors import SinkTrainError

if TYPE_CHECKING:
    from .slots import SlotState

IGNORE_INDEX = -100  # label of positions without a loss (transformers' convention)

SELECTIONS: dict[str, Callable[["SlotState"], torch.Tensor]] = {
    "sink": lambda state: ~state.visual | (state.patch & state.sink_mask()),
    "non": lambda state: ~state.visual | (state.patch & ~state.sink_mask()),
}


@dataclass
class Compaction:
    """Which positions of a forward's sequence the language model received, in order."""

    order: torch.Tensor  # (B, L) long: the kept positions first (then padding positions)
    valid: torch.Tensor  # (B, L) bool: order[b, j] is a kept position
    length: int  # the forward's full sequence length T

    @classmethod
    def of(cls, keep: torch.Tensor) -> "Compaction":
        kept = int(keep.sum(dim=1).max())
        order = (~keep).long().argsort(dim=1, stable=True)[:, :kept]
        return cls(order, keep.gather(1, order), keep.shape[1])

    def gather(self, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """``tensor`` (..., T, ...) with dim ``dim`` = the batch's sequence axis -> its kept entries."""
        index = self.order.view(*([1] * (dim - 1)), *self.order.shape, *([1] * (tensor.dim() - dim - 1)))
        shape = list(tensor.shape)
        shape[dim] = self.order.shape[1]
        return tensor.gather(dim, index.expand(shape))

    def attention_mask(self, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None and mask.dim() != 2:
            raise SinkTrainError("slot selection needs the 2-D attention mask the stock model passes its language model")
        kept = self.valid.long()
        return kept if mask is None else self.gather(mask) * kept

    def expand(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, D) language-model output -> (B, T, D) at the kept positions, zeros elsewhere."""
        full = hidden.new_zeros(hidden.shape[0], self.length, hidden.shape[-1])
        index = self.order.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return full.scatter(1, index, hidden * self.valid.unsqueeze(-1).to(hidden.dtype))


@contextmanager
def selecting_slots(backbone, keep: Callable[["SlotState"], torch.Tensor], by_mask: bool = False):
    """Forwards inside the block give the LLM only the slots ``keep`` marks: removed from its input
    (training forwards), or with ``by_mask`` masked out of attention (generate())."""
    slots = backbone.slots
    slots.selector, slots.select_by_mask = keep, by_mask
    try:
        yield
    finally:
        slots.selector, slots.select_by_mask, slots.hidden = None, False, None


def hide_slots(mask: torch.Tensor | None, keep: torch.Tensor, width: int) -> torch.Tensor:
    """A 2-D attention mask of ``width`` columns whose first ``keep.shape[1]`` columns attend only where ``keep``."""
    if mask is None:
        mask = torch.ones(keep.shape[0], width, dtype=torch.long, device=keep.device)
    elif mask.dim() != 2:
        raise SinkTrainError("slot selection needs the 2-D attention mask the stock model passes its language model")
    mask = mask.clone()
    mask[:, : keep.shape[1]] *= keep.to(mask.dtype)
    return mask


def compact_inputs(kwargs: dict, embeds: torch.Tensor, positions: torch.Tensor, compaction: Compaction) -> dict:
    """The language model's keyword arguments with only the kept positions (collective-free, per sample)."""
    kwargs["inputs_embeds"] = compaction.gather(embeds)
    kwargs["position_ids"] = compaction.gather(positions, dim=positions.dim() - 1)
    kwargs["attention_mask"] = compaction.attention_mask(kwargs.get("attention_mask"))
    return kwargs


def compacted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, compaction: Compaction) -> torch.Tensor:
    """Mean next-token cross-entropy over the compacted sequence (each kept token predicts the next kept one)."""
    logits = compaction.gather(logits)[:, :-1].float()
    targets = compaction.gather(labels).masked_fill(~compaction.valid, IGNORE_INDEX)[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
