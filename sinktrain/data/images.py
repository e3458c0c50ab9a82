"""Image inputs of one family: PIL images -> the model's image tensors and each image's slot count.

A backbone gives data workers an ``ImageInputs`` (small and picklable, no model inside):

    tensors, slots = image_inputs([image_a, image_b])   # {"pixel_values": ..., ...}, [576, 576]
    tensors, slots = image_inputs.blank()                # one image for a micro-batch without any

Tensors of several samples concatenate along dim 0 (``concat_vision``), which is how every
supported family's ``forward`` takes a batch's images.
"""

from __future__ import annotations

from typing import Protocol

import torch
from PIL import Image


class ImageInputs(Protocol):
    def __call__(self, images: list[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]: ...

    def blank(self) -> tuple[dict[str, torch.Tensor], list[int]]: ...


def concat_vision(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The image tensors of several samples as one batch (empty when no sample has an image)."""
    parts = [part for part in parts if part]
    if not parts:
        return {}
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
