"""sinktrain: attention-sink-aware training of vision-language models (DIYSink, LSG)."""

from sinktrain.errors import SinkTrainError

__all__ = ["SinkTrainError"]
__version__ = "0.1.0"
