"""Flag parsing shared by the tools (tools/*.py): small converters with errors that say the fix."""

from __future__ import annotations

from sinktrain.errors import SinkTrainError


def layer_list(text: str) -> list[int]:
    """``"3,6,10"`` -> [3, 6, 10]; ranges too: ``"0-3,8"`` -> [0, 1, 2, 3, 8]."""
    try:
        layers = [layer for part in text.split(",") if part.strip() for layer in layer_range(part)]
    except ValueError as err:
        raise SinkTrainError(f"--layers {text!r}: give comma-separated layer indices or ranges, e.g. --layers 3,6,10 or 0-31") from err
    if not layers:
        raise SinkTrainError(f"--layers {text!r} names no layer; give comma-separated layer indices, e.g. --layers 3,6,10")
    return layers


def layer_range(part: str) -> list[int]:
    first, dash, last = part.strip().partition("-")
    if not dash:
        return [int(part)]
    if int(last) < int(first):
        raise ValueError(f"empty range {part}")
    return list(range(int(first), int(last) + 1))
