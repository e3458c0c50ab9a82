"""Running per layer and channel activation statistics, of fixed size, that ranks add up.

    stats = SinkStats.empty(vit_layers=25, vit_width=1024, llm_layers=32, llm_width=4096, device="cuda")
    stats.vit.add(first, hidden, keep=None)          # hidden: (layers, images, tokens, D) from layer `first`
    stats.reduce()                                   # all_reduce: SUM for counts, MAX for peaks

Every tensor is layers x channels x NUM_BINS (or smaller): memory does not depend on how many
images pass through, and since counts add and peaks take the max, the totals do not depend on
how the images were split over ranks or batches. Per part (vision tower, LLM):

* ``hist``: tokens per log-magnitude bin (the channel's distribution: medians, gaps, counts
  above any threshold), ``image_max``: images per bin of their largest magnitude in the channel
  (how many images have a massive token there), ``peak``: the largest magnitude seen;
* LLM only, ``normed``: ``hist`` after weightless RMSNorm (VAR thresholds L-sinks there);
* the LLM is counted twice: ``llm_all`` over every token (where massive dims are chosen: they
  show first at the first token and at delimiters) and ``llm`` over visual tokens that are not
  V-sinks (where L-sinks and tau_L are counted). ``llm`` keeps only the histogram tau_L is set
  on (``normed``, or ``hist`` for raw values), its peaks and token counts: the dims are chosen
  on ``llm_all``, so a second raw histogram of the visual tokens would be counted for nothing.
  ``where`` keeps each channel's peak magnitude per token category (first token, delimiters,
  visual, other text) and layer;
* the vision layer feeding the connector also keeps, per channel, how many images have
  0, 1, ..., COUNT_CAP tokens at or above each bin (sinks per image at any threshold), and for
  the l2_norm criterion (DIYSink's) the same for token L2 norms; ``slots`` the same per LLM slot
  for connectors that merge several patches into one slot (a slot's value: its patches' largest);
* a second vision branch (DeepSeek-VL-Hybrid's SAM, the connector's second input), when there is
  one: ``high_res`` (one layer: the tensor the connector receives) and ``high_res_read``, kept
  apart from SigLIP's so a user sees which branch carries sinks.

This runs on every hidden state of every batch, so it is written for speed: magnitudes are binned
from their float bits in place (bins.py), several layers at a time, and counted with one
scatter-add straight into the running totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist

from sinktrain.find_sinks.bins import MAGNITUDE_MASK, NUM_BINS, bits_to_float, magnitude_bits, offset_bins_

COUNT_CAP = 16  # images with more sinks than this are counted as having COUNT_CAP


def _zeros(*shape, device, dtype=torch.int32) -> torch.Tensor:
    return torch.zeros(*shape, device=device, dtype=dtype)


def slot_offsets(shape: tuple[int, ...], device) -> torch.Tensor:
    """Offsets giving every position of ``shape`` (e.g. images x channels) its own NUM_BINS slots."""
    return (torch.arange(math.prod(shape), device=device, dtype=torch.int32) * NUM_BINS).view(shape)


def count_into_(target: torch.Tensor, bits: torch.Tensor) -> None:
    """Add (G, n, D) magnitude bits (consumed) to target (G, D, NUM_BINS), contiguous: no temporary counts."""
    groups, _, width = bits.shape
    flat = offset_bins_(bits, slot_offsets((groups, 1, width), bits.device)).reshape(-1)
    one = torch.ones((), device=bits.device, dtype=target.dtype)
    target.view(-1).index_add_(0, flat, one.expand(flat.numel()))


@dataclass
class PartStats:
    """Statistics of one model part over its layers (hidden-state indices)."""

    hist: torch.Tensor | None  # (L, D, B) int32; None: raw values not counted (``raw=False``)
    image_max: torch.Tensor | None  # (L, D, B) int32; None with ``hist``
    peak: torch.Tensor  # (L, D) float32
    tokens: torch.Tensor  # (L,) int64: tokens counted per layer
    normed: torch.Tensor | None = None  # (L, D, B) int32, LLM only

    @classmethod
    def empty(cls, layers: int, width: int, device, normed: bool = False, raw: bool = True) -> "PartStats":
        """``normed``: a histogram after weightless RMSNorm; ``raw``: the raw-value histogram and
        images' largest values (peaks and token counts are always kept)."""
        return cls(
            hist=_zeros(layers, width, NUM_BINS, device=device) if raw else None,
            image_max=_zeros(layers, width, NUM_BINS, device=device) if raw else None,
            peak=_zeros(layers, width, device=device, dtype=torch.float32),
            tokens=_zeros(layers, device=device, dtype=torch.int64),
            normed=_zeros(layers, width, NUM_BINS, device=device) if normed else None,
        )

    def add(self, first: int, hidden: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Count consecutive layers ``first, first + 1, ...``: hidden (layers, images, tokens, D).

        ``hidden`` must be float32 and contiguous, and is consumed (binned in place). ``keep``
        (images, tokens) drops tokens: they are zeroed (bin 0 of every channel) and taken out of
        bin 0 again, which keeps every image rectangular (one amax). Several layers at once make
        small models cheap to profile: there the cost is in the number of operations.
        """
        layers, images, tokens, width = hidden.shape
        span = slice(first, first + layers)
        rows = hidden.view(layers, images * tokens, width)
        dropped = 0
        if keep is not None:
            dropped_rows = (~keep).reshape(-1).nonzero().squeeze(-1)
            dropped = dropped_rows.numel()
            rows.index_fill_(1, dropped_rows, 0.0)  # touches only the dropped rows
        normed = rms_normalized(rows) if self.normed is not None else None  # zero rows stay zero
        bits = rows.view(torch.int32).bitwise_and_(MAGNITUDE_MASK)  # in place: |values| as ordered ints
        if self.hist is not None:
            image_peaks = bits.view(layers, images, tokens, width).amax(dim=2)  # (layers, images, D)
            torch.maximum(self.peak[span], bits_to_float(image_peaks.amax(dim=1)), out=self.peak[span])
            count_into_(self.image_max[span], image_peaks)
            count_into_(self.hist[span], bits)
        else:
            torch.maximum(self.peak[span], bits_to_float(bits.amax(dim=1)), out=self.peak[span])
        self.tokens[span] += images * tokens - dropped
        if normed is not None:
            count_into_(self.normed[span], normed.view(torch.int32).bitwise_and_(MAGNITUDE_MASK))
        if dropped:
            for counts in (self.hist, self.normed):
                if counts is not None:
                    counts[span, :, 0] -= dropped


def rms_normalized(hidden: torch.Tensor, eps: float = 1e-6, out: torch.Tensor | None = None) -> torch.Tensor:
    """sinktrain.modeling.sinks.rms_normalize in fewer passes (one norm, one multiply): VAR's weightless RMSNorm."""
    h = hidden.float()
    mean_square = torch.linalg.vector_norm(h, dim=-1, keepdim=True).square_().div_(h.shape[-1])
    return torch.mul(h, mean_square.add_(eps).rsqrt_(), out=out)


@dataclass
class ReadLayerStats:
    """Sinks per image at any threshold, at the vision layer feeding the connector.

    Kept as difference arrays over bins (cumsum over the last axis gives the counts), so each batch
    adds 2 x (COUNT_CAP + 1) entries per image and channel instead of a full bins x counts table.
    """

    per_image_diff: torch.Tensor  # (D, COUNT_CAP + 1, B + 1) int32
    norm_hist: torch.Tensor | None = None  # (B,) int32: tokens per bin of their L2 norm (l2_norm criterion)
    norm_per_image_diff: torch.Tensor | None = None  # (1, COUNT_CAP + 1, B + 1) int32 (l2_norm criterion)

    @classmethod
    def empty(cls, width: int, device, norms: bool = False) -> "ReadLayerStats":
        return cls(
            per_image_diff=_zeros(width, COUNT_CAP + 1, NUM_BINS + 1, device=device),
            norm_hist=_zeros(NUM_BINS, device=device) if norms else None,
            norm_per_image_diff=_zeros(1, COUNT_CAP + 1, NUM_BINS + 1, device=device) if norms else None,
        )

    def add(self, hidden: torch.Tensor, keep: torch.Tensor | None = None, norms: torch.Tensor | None = None) -> torch.Tensor:
        """Count (images, tokens, D), padded positions (``keep`` False) zero; returns the token L2
        norms (images, tokens), or counts the ``norms`` given (a merged slot's: its largest patch's)."""
        add_count_intervals(self.per_image_diff, magnitude_bits(hidden))  # zeros never reach a sink's bin
        norms = torch.linalg.vector_norm(hidden.float(), dim=-1) if norms is None else norms
        if self.norm_hist is not None:
            norm_bits = magnitude_bits(norms)
            add_count_intervals(self.norm_per_image_diff, norm_bits.unsqueeze(-1))
            count_into_(self.norm_hist.view(1, 1, -1), norm_bits.view(1, -1, 1))
            if keep is not None:
                self.norm_hist[0] -= (~keep).sum().to(self.norm_hist.dtype)  # padding counted in bin 0: taken out
        return norms

    def per_image(self) -> torch.Tensor:
        """(D, B, COUNT_CAP + 1): images with c tokens at or above bin b (c = COUNT_CAP: that many or more)."""
        return self.per_image_diff.cumsum(dim=-1)[..., :NUM_BINS].transpose(1, 2)

    def norm_per_image(self) -> torch.Tensor:
        """(B, COUNT_CAP + 1), as ``per_image`` for token L2 norms."""
        return self.norm_per_image_diff.cumsum(dim=-1)[0, :, :NUM_BINS].transpose(0, 1)


def add_count_intervals(diff: torch.Tensor, bits: torch.Tensor) -> None:
    """Add each image's "tokens at or above bin b" to the (D, COUNT_CAP + 1, B + 1) difference array.

    With t_1 >= t_2 >= ... the bins of an image's largest values in a channel, exactly c tokens
    lie at or above bin b for b in (t_{c+1}, t_c] (t_0 = the top bin); COUNT_CAP or more for
    b <= t_COUNT_CAP. Each interval is a +1 at its start and a -1 after its end.
    """
    images, tokens, width = bits.shape
    k = min(COUNT_CAP, tokens)
    top = bits.topk(k, dim=1).values.transpose(1, 2)  # (images, D, k), largest first (topk along tokens: no transposed copy)
    upper = offset_bins_(top, torch.ones((), device=bits.device, dtype=torch.int32))  # t_j + 1
    if k < COUNT_CAP:  # fewer tokens than the cap: the missing t_j lie below bin 0
        upper = torch.cat([upper, upper.new_zeros(images, width, COUNT_CAP - k)], dim=-1)
    starts = torch.cat([upper, upper.new_zeros(images, width, 1)], dim=-1)  # count c starts at t_{c+1} + 1
    ends = torch.cat([upper.new_full((images, width, 1), NUM_BINS), upper], dim=-1)  # and ends before t_c + 1
    rows = (torch.arange(width * (COUNT_CAP + 1), device=bits.device, dtype=torch.int32) * (NUM_BINS + 1)).view(width, COUNT_CAP + 1)
    flat = diff.view(-1)
    ones = torch.ones(images * width * (COUNT_CAP + 1), device=bits.device, dtype=diff.dtype)
    flat.index_add_(0, (starts + rows).reshape(-1), ones)
    flat.index_add_(0, (ends + rows).reshape(-1), -ones)


@dataclass
class SinkStats:
    vit: PartStats
    llm: PartStats  # visual tokens that are not V-sinks
    llm_all: PartStats  # every token
    read: ReadLayerStats
    slots: ReadLayerStats | None  # per LLM slot, when slots merge several patches
    where: torch.Tensor  # (categories, L, D) float32: peak magnitude per token category
    images: torch.Tensor  # () int64
    high_res: PartStats | None = None  # the connector's second input (one layer), when it has one
    high_res_read: ReadLayerStats | None = None

    PARTS = ("vit", "llm", "llm_all", "read", "slots", "high_res", "high_res_read")
    READ_PARTS = ("read", "slots", "high_res_read")

    @classmethod
    def empty(
        cls, vit_layers: int, vit_width: int, llm_layers: int, llm_width: int, device, normed: bool = True, norms: bool = False,
        slots: bool = False, high_res_width: int | None = None,
    ) -> "SinkStats":
        """``normed``: L-sink values after weightless RMSNorm (else raw); ``norms``: token L2 norms
        (l2_norm criterion); ``slots``: slot statistics (a connector that merges patches);
        ``high_res_width``: the width of a second vision branch (DeepSeek-VL-Hybrid's SAM)."""
        from sinktrain.find_sinks.tokens import CATEGORY_NAMES

        return cls(
            vit=PartStats.empty(vit_layers, vit_width, device),
            llm=PartStats.empty(llm_layers, llm_width, device, normed=normed, raw=not normed),
            llm_all=PartStats.empty(llm_layers, llm_width, device),
            read=ReadLayerStats.empty(vit_width, device, norms=norms),
            slots=ReadLayerStats.empty(vit_width, device, norms=norms) if slots else None,
            where=_zeros(len(CATEGORY_NAMES), llm_layers, llm_width, device=device, dtype=torch.float32),
            images=_zeros((), device=device, dtype=torch.int64),
            high_res=PartStats.empty(1, high_res_width, device) if high_res_width else None,
            high_res_read=ReadLayerStats.empty(high_res_width, device, norms=norms) if high_res_width else None,
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every statistic by name ("vit.hist", ...): what reduce() and the tests walk over."""
        named = {"images": self.images, "where": self.where}
        for part in self.PARTS:
            if getattr(self, part) is None:
                continue
            holder = getattr(self, part)
            for f in fields(holder):
                value = getattr(holder, f.name)
                if value is not None:
                    named[f"{part}.{f.name}"] = value
        return named

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def reduce(self) -> None:
        """Sum the counts and take the max of the peaks over all ranks (in place, every rank)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        for name, tensor in self.tensors().items():
            op = dist.ReduceOp.MAX if name.endswith(".peak") or name == "where" else dist.ReduceOp.SUM
            dist.all_reduce(tensor, op=op)

    def to_cpu(self) -> "SinkStats":
        moved = {name: t.cpu() for name, t in self.tensors().items()}
        parts = {}
        for part in self.PARTS:
            cls = ReadLayerStats if part in self.READ_PARTS else PartStats
            values = {f.name: moved.get(f"{part}.{f.name}") for f in fields(cls)}
            parts[part] = cls(**values) if any(v is not None for v in values.values()) else None
        return SinkStats(images=moved["images"], where=moved["where"], **parts)
