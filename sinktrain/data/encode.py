"""Raw shard sample -> training example: image preprocessing, template, tokens, labels.

Runs inside data workers, so it holds only the tokenizer and the image preprocessor (never the
model). Anything wrong with one sample raises ``BadSample``: the stream skips it, logs shard, key
and reason, and counts it towards ``--max_bad_fraction``. An over-long sample is truncated with
its labels; one that cannot be (the cut would hit the image or the first answer) is skipped so.
"""

from __future__ import annotations

import io
import json
from typing import Callable

import torch
from PIL import Image

from sinktrain.data.shards import IMAGE_EXTENSIONS
from sinktrain.data.stream import BadSample
from sinktrain.data.templates import build_example
from sinktrain.errors import SinkTrainError

class TooLong(BadSample):
    """Longer than --max_length and not truncatable (the cut would hit the image or first answer)."""


def image_member(raw: dict) -> tuple[str, bytes] | None:
    for extension in IMAGE_EXTENSIONS:
        if extension in raw:
            return extension, raw[extension]
    return None


def decode_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except Exception as err:  # PIL raises many types for broken files
        raise BadSample(f"undecodable image ({err})") from err


class SampleEncoder:
    def __init__(
        self,
        tokenizer,
        preprocess_images: Callable[[list], torch.Tensor],
        template: str,
        image_token_id: int,
        num_image_tokens: int,
        max_length: int | None,
        on_overflow: str = "truncate",
    ):
        self.tokenizer, self.preprocess_images, self.template = tokenizer, preprocess_images, template
        self.image_token_id, self.num_image_tokens = image_token_id, num_image_tokens
        self.max_length, self.on_overflow = max_length, on_overflow

    def record(self, raw: dict) -> dict:
        try:
            record = json.loads(raw["json"])
            conversations = record["conversations"]
        except (KeyError, TypeError, ValueError) as err:
            raise BadSample(f"no readable LLaVA record ({err!r})") from err
        return conversations

    def __call__(self, raw: dict) -> dict:
        """A raw shard sample (bytes) -> a training example; BadSample if anything is wrong."""
        conversations = self.record(raw)
        member = image_member(raw)
        image = decode_image(member[1]) if member else None
        try:
            example = self.encode(conversations, image)
        except SinkTrainError as err:
            raise BadSample(str(err)) from err
        if example is None:
            raise TooLong(f"longer than --max_length {self.max_length} and not truncatable")
        return example

    def encode(self, conversations: list[dict], image: Image.Image | None) -> dict | None:
        """Conversation + decoded image (None: text-only) -> tensors; None when it must be dropped."""
        example = build_example(
            conversations, self.tokenizer, self.template, self.image_token_id,
            self.num_image_tokens if image is not None else 0, self.max_length, self.on_overflow,
        )
        if example is None:
            return None
        return {
            "input_ids": torch.tensor(example.input_ids),
            "labels": torch.tensor(example.labels),
            "last_prompt_index": example.last_prompt_index,
            "pixel_values": self.preprocess_images([image])[0],
            "has_image": image is not None,
        }
