"""Batching: right-pad token ids and labels, concatenate images, keep each sample's stream position.

A micro-batch in which no sample has an image gets the family's blank image anyway, its slots
appended to the first row as padding (attention 0, labels -100): nothing attends to them and no
loss reads them, so the logits and loss are exactly those without it, but the vision tower and
the connector run (and get a zero gradient) on every rank on every step, as ZeRO-3 requires.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from sinktrain.data.batch import Batch
from sinktrain.data.chat import IGNORE_INDEX
from sinktrain.data.images import concat_vision
from sinktrain.data.stream import stream_positions


class Collator:
    def __init__(self, pad_token_id: int, image_token_id: int, blank: tuple[dict, list[int]]):
        self.pad_token_id, self.image_token_id = pad_token_id, image_token_id
        self.blank_vision, blank_slots = blank
        self.blank_slots = sum(blank_slots)

    def __call__(self, samples: list[dict]) -> tuple[Batch, list[tuple[int, int, int, int, int]]]:
        ids = [s["input_ids"] for s in samples]
        labels = [s["labels"] for s in samples]
        real = [torch.ones_like(i) for i in ids]
        vision = concat_vision([s["vision"] for s in samples])
        if not vision:  # the blank image's slots as masked padding of row 0
            ids[0] = torch.cat([ids[0], torch.full((self.blank_slots,), self.image_token_id)])
            labels[0] = torch.cat([labels[0], torch.full((self.blank_slots,), IGNORE_INDEX)])
            real[0] = torch.cat([real[0], torch.zeros(self.blank_slots, dtype=real[0].dtype)])
            vision = dict(self.blank_vision)
        batch = Batch(
            input_ids=pad_sequence(ids, batch_first=True, padding_value=self.pad_token_id),
            attention_mask=pad_sequence(real, batch_first=True, padding_value=0),
            labels=pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX),
            images_per_sample=torch.tensor([s["images"] for s in samples]),
            vision=vision,
            questions=[s.get("question", "") for s in samples],
            categories=[s.get("category") for s in samples],
        )
        return batch, stream_positions(samples)
