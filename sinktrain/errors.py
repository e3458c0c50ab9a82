"""The one exception type users see (defined with the model-side code, sinktrain.modeling.errors)."""

from sinktrain.modeling.errors import SinkTrainError

__all__ = ["SinkTrainError"]
