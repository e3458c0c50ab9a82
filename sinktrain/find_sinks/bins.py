"""Log-magnitude bins read straight from float32 bits: 8 bins per octave, no logarithm computed.

    bins = bin_of(hidden)            # (..., D) int32 bin index of |hidden|
    edges()[i], edges()[i + 1]       # the magnitudes bin i covers

For a non-negative float32 the bits (sign cleared) order exactly like the values, and the top
bits (exponent + 3 mantissa bits) split every octave into 8 bins (~9% wide). That makes binning
three integer operations per element (the streaming pass runs it on every hidden state), and
exact: the same value always lands in the same bin, whatever rank or batch computed it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SUB_BITS = 3  # 2**3 = 8 bins per octave
LOW_OCTAVE = -13  # bin 0 starts at 2**-13 ~ 1.2e-4 and also takes everything smaller (zeros too)
NUM_OCTAVES = 32  # the last bin starts just below 2**19 ~ 5e5 and takes everything larger
NUM_BINS = NUM_OCTAVES << SUB_BITS
_SHIFT = 23 - SUB_BITS  # float32 has 23 mantissa bits
_BASE = (127 + LOW_OCTAVE) << SUB_BITS  # 127: the float32 exponent bias
MAGNITUDE_MASK = 0x7FFFFFFF  # clears the sign bit


def magnitude_bits(hidden: torch.Tensor) -> torch.Tensor:
    """The int32 bits of |hidden| as float32: integers that order exactly like the magnitudes."""
    return hidden.float().contiguous().view(torch.int32) & MAGNITUDE_MASK


def bits_to_float(bits: torch.Tensor) -> torch.Tensor:
    return bits.contiguous().view(torch.float32)


def bin_of_bits(bits: torch.Tensor) -> torch.Tensor:
    return ((bits >> _SHIFT) - _BASE).clamp_(0, NUM_BINS - 1)


def offset_bins_(bits: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """In place: bits -> bin index + offsets (one slot of NUM_BINS per channel, image, ...)."""
    return bits.bitwise_right_shift_(_SHIFT).clamp_(_BASE, _BASE + NUM_BINS - 1).add_(offsets - _BASE)


def bin_of(hidden: torch.Tensor) -> torch.Tensor:
    return bin_of_bits(magnitude_bits(hidden))


def bins_of_values(values: np.ndarray) -> np.ndarray:
    """``bin_of`` for a numpy array of magnitudes (the analysis side): int64 bin indices."""
    bits = np.asarray(values, dtype=np.float32).view(np.int32) & MAGNITUDE_MASK
    return np.clip((bits >> _SHIFT) - _BASE, 0, NUM_BINS - 1).astype(np.int64)


def bin_of_value(value: float) -> int:
    """The bin a single magnitude falls in (same rule as ``bin_of``)."""
    return int(bins_of_values(np.array([value]))[0])


def edges() -> np.ndarray:
    """NUM_BINS + 1 bin edges (float64): bin i holds magnitudes in [edges[i], edges[i + 1])."""
    bits = (torch.arange(NUM_BINS + 1, dtype=torch.int64) + _BASE) << _SHIFT
    return bits.to(torch.int32).view(torch.float32).double().numpy()


def centre(index: int) -> float:
    """Geometric middle of bin ``index``: the value a count in that bin stands for."""
    lower, upper = edges()[index], edges()[index + 1]
    return math.sqrt(lower * upper)


def median_bin(counts: np.ndarray) -> int:
    """The bin holding the median of a histogram (counts over NUM_BINS bins)."""
    cumulative = np.cumsum(counts)
    return int(np.searchsorted(cumulative, cumulative[-1] / 2.0))


def median_value(counts: np.ndarray) -> float:
    return centre(median_bin(counts)) if counts.sum() else 0.0
