"""Batching: right-pad token ids and labels, stack images, keep each sample's stream position."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from sinktrain.backbones.base import Batch
from sinktrain.data.templates import IGNORE_INDEX


class Collator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict]) -> tuple[Batch, list[tuple[int, int, int]]]:
        input_ids = pad_sequence([s["input_ids"] for s in samples], batch_first=True, padding_value=self.pad_token_id)
        labels = pad_sequence([s["labels"] for s in samples], batch_first=True, padding_value=IGNORE_INDEX)
        lengths = torch.tensor([len(s["input_ids"]) for s in samples])
        attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
        batch = Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            pixel_values=torch.stack([s["pixel_values"] for s in samples]),
            has_image=torch.tensor([s["has_image"] for s in samples]),
            last_prompt_index=torch.tensor([s["last_prompt_index"] for s in samples]),
        )
        positions = [(s["reader"], s["index"], s["bad"]) for s in samples]
        return batch, positions
