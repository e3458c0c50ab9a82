"""The model's processor, loaded without torchvision when the model's images do not need it.

    processor = load_processor("Qwen/Qwen2-VL-7B-Instruct")   # .tokenizer, .image_processor

The CPU torch wheel has no torchvision. transformers' image processors then run on their PIL
backend (chosen here explicitly, so nothing warns about a fallback); but a processor that also
carries a video processor (Qwen-VL) cannot be constructed at all. sinktrain only needs the
tokenizer, the image processor and the chat template, so when the model's own processor class
cannot be built it gets those two parts, loaded from the same directory (``ImageTextProcessor``).
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
from transformers.utils import is_torchvision_available

from sinktrain.errors import SinkTrainError


class ImageTextProcessor:
    """A tokenizer and an image processor: what sinktrain uses of a multimodal processor."""

    def __init__(self, tokenizer, image_processor):
        self.tokenizer, self.image_processor = tokenizer, image_processor

    @property
    def chat_template(self) -> str | None:
        return self.tokenizer.chat_template

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)


def image_backend() -> str:
    return "torchvision" if is_torchvision_available() else "pil"


def load_processor(model: str):
    try:
        processor = AutoProcessor.from_pretrained(model, backend=image_backend())
    except Exception as err:  # noqa: BLE001 - transformers raises several types when a part needs torchvision
        reason = err
    else:
        if hasattr(processor, "image_processor"):
            return processor
        reason = "no multimodal processor config"
    try:
        return ImageTextProcessor(AutoTokenizer.from_pretrained(model), AutoImageProcessor.from_pretrained(model, backend=image_backend()))
    except (OSError, ValueError, ImportError) as err:
        raise SinkTrainError(
            f"cannot load the processor of {model}: {reason}; and its tokenizer + image processor alone failed too ({err}). "
            "The model directory needs tokenizer files and a preprocessor_config.json; if a part needs torchvision, "
            "install it (pip install torchvision) or save that part with its PIL image processor"
        ) from err
