"""Flag parsing shared by the tools (tools/*.py): small converters with errors that say the fix."""

from __future__ import annotations

from sinktrain.errors import SinkTrainError


def layer_list(text: str) -> list[int]:
    """``"3,6,10"`` -> [3, 6, 10]."""
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise SinkTrainError(f"--layers {text!r}: give comma-separated layer indices, e.g. --layers 3,6,10") from err
    if not layers:
        raise SinkTrainError(f"--layers {text!r} names no layer; give comma-separated layer indices, e.g. --layers 3,6,10")
    return layers
