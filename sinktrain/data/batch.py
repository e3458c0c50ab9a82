"""What the collator hands a backbone: padded token ids and labels plus the batch's image inputs.

``vision`` holds the family's image tensors for every image of the batch, concatenated in the
order the images' slots appear in the rows (LLaVA: ``pixel_values`` (images, 3, H, W); Qwen-VL:
``pixel_values`` (patches, C*T*P*P) and ``image_grid_thw`` (images, 3)); its keys are the model's
own ``forward`` arguments. A micro-batch without any image still carries one (see
sinktrain.data.collate): every rank must run the vision path on every step under ZeRO-3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, -100 where no loss
    images_per_sample: torch.Tensor  # (B,) long: the samples' own images (not the blank one)
    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    questions: list[str] = field(default_factory=list)  # each sample's first question, image markers removed (ReW)
    categories: list[str | None] = field(default_factory=list)  # each sample's record category, if it has one

    @property
    def has_image(self) -> torch.Tensor:
        return self.images_per_sample > 0

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        """On ``device``; floating image tensors also in ``dtype`` (the model's precision)."""

        def move(tensor: torch.Tensor) -> torch.Tensor:
            cast = dtype if dtype is not None and tensor.is_floating_point() else None
            return tensor.to(device, cast)

        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
            self.images_per_sample.to(device), {name: move(value) for name, value in self.vision.items()},
            self.questions, self.categories,
        )
