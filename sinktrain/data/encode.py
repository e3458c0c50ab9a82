"""Raw shard sample -> training example: image inputs, chat format, tokens, labels.

Runs inside data workers, so it holds only the tokenizer and the family's image inputs (never
the model). The images are processed first, because how many slots an image takes can depend on
its size (Qwen-VL); the conversation is then rendered with that many image tokens. A sample's
images are its plain ``<ext>`` member or its indexed ``0.<ext>``, ``1.<ext>``, ... members, in
``<image>`` order (sinktrain.data.shard_format). Anything wrong with one sample (a broken record,
an undecodable image, image members that break the layout, ``<image>`` markers that do not
match the images) raises ``BadSample``: the stream skips it, logs shard, key and reason, and
counts it towards ``--max_bad_fraction``. An over-long sample is truncated with its labels; one
that cannot be (the cut would hit an image or the first answer) is skipped so.
"""

from __future__ import annotations

import io
import json
import torch
from PIL import Image

from sinktrain.data.chat import encode
from sinktrain.data.images import ImageInputs
from sinktrain.data.shard_format import IMAGE_EXTENSIONS, INDEXED_IMAGE_FIELD
from sinktrain.data.stream import BadSample
from sinktrain.data.turns import answer_ends, turn_examples
from sinktrain.errors import SinkTrainError

class TooLong(BadSample):
    """Longer than --max_length and not truncatable (the cut would hit an image or the first answer)."""


LAYOUT_FIX = (
    "write one image as <key>.<ext> and several as <key>.0.<ext>, <key>.1.<ext>, ... "
    "(tools/make_shards.py does)"
)


def image_member(raw: dict) -> tuple[str, bytes] | None:
    """The plain single-image member (a multi-image sample's indexed members are not one)."""
    for extension in IMAGE_EXTENSIONS:
        if extension in raw:
            return extension, raw[extension]
    return None


def indexed_members(raw: dict) -> dict[int, str]:
    """A multi-image sample's fields by image index ("0.png" -> 0); BadSample on a duplicate index."""
    fields: dict[int, str] = {}
    for name in raw:
        match = INDEXED_IMAGE_FIELD.fullmatch(name)
        if not match or match[2] not in IMAGE_EXTENSIONS:
            continue
        index = int(match[1])
        if index in fields:
            raise BadSample(f"two image members for image {index} ({fields[index]}, {name}); {LAYOUT_FIX}")
        fields[index] = name
    return fields


def image_members(raw: dict) -> list[tuple[str, bytes]]:
    """The sample's (field, bytes) images in <image> order; BadSample when the layout is broken."""
    single, fields = image_member(raw), indexed_members(raw)
    if not fields:
        return [single] if single else []
    names = ", ".join(fields[i] for i in sorted(fields))
    if single:
        raise BadSample(f"mixes a plain image member ({single[0]}) with indexed ones ({names}); {LAYOUT_FIX}")
    missing = next(i for i in range(len(fields) + 1) if i not in fields)
    if missing < len(fields):
        raise BadSample(f"image members {names} have no image {missing} (indices must be 0..n-1); {LAYOUT_FIX}")
    return [(fields[i], raw[fields[i]]) for i in range(len(fields))]


def decode_image(data: bytes, member: str | None = None) -> Image.Image:
    """A decoded RGB image; `member` names it in the error (which image of several is broken)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        # convert() copies even an RGB image: 0.1-0.3 ms of a 336 px sample's ~8 ms, for nothing
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as err:  # PIL raises many types for broken files
        raise BadSample(f"undecodable image{f' {member}' if member else ''} ({err})") from err


def decode_images(members: list[tuple[str, bytes]]) -> list[Image.Image]:
    """A sample's decoded images; a broken one is named by its member when there are several."""
    several = len(members) > 1
    return [decode_image(data, name if several else None) for name, data in members]


def first_question(conversations: list[dict]) -> str:
    """The first human turn's text without its image markers (what ReW embeds)."""
    first = next((turn.get("value", "") for turn in conversations if turn.get("from") == "human"), "")
    return " ".join(str(first).replace("<image>", " ").split())


class SampleEncoder:
    """A raw shard sample -> a training example, in the backbone's chat format and image inputs."""

    def __init__(
        self,
        tokenizer,
        image_inputs: ImageInputs,
        template: str,
        image_token_id: int,
        max_length: int | None,
        on_overflow: str = "truncate",
    ):
        self.tokenizer, self.image_inputs, self.template = tokenizer, image_inputs, template
        self.image_token_id, self.max_length, self.on_overflow = image_token_id, max_length, on_overflow
        self.category_field = "category"  # the record field a sample's category is read from (ReW: --balance_by)
        self.one_example_per_turn = False  # LSG: each answer its own example (sinktrain.data.turns)

    def record(self, raw: dict) -> dict:
        try:
            record = json.loads(raw["json"])
            if not isinstance(record["conversations"], list):
                raise TypeError("conversations is not a list")
        except (KeyError, TypeError, ValueError) as err:
            raise BadSample(f"no readable LLaVA record ({err!r})") from err
        return record

    def __call__(self, raw: dict) -> dict | list[dict]:
        """A raw shard sample (bytes) -> a training example (with one_example_per_turn: a list, one
        per answer); BadSample if anything is wrong."""
        record = self.record(raw)
        conversations = record["conversations"]
        images = decode_images(image_members(raw))
        try:
            if self.one_example_per_turn and len(answer_ends(conversations)) > 1:
                processed = self.image_inputs(images) if images else ({}, [])  # once, not once per turn
                examples = turn_examples(lambda turns: self.encode(turns, images, processed), conversations)
            else:
                example = self.encode(conversations, images)
                examples = [] if example is None else [{**example, "question": first_question(conversations)}]
        except SinkTrainError as err:
            raise BadSample(str(err)) from err
        except ValueError as err:  # the image processor refuses an image (e.g. an aspect ratio over 200)
            raise BadSample(f"image not processable ({err})") from err
        if not examples:
            raise TooLong(f"longer than --max_length {self.max_length} and not truncatable")
        category = record.get(self.category_field)
        return [{**e, "category": category} for e in examples] if self.one_example_per_turn else {**examples[0], "category": category}

    def encode(self, conversations: list[dict], images: list[Image.Image], processed: tuple[dict, list[int]] | None = None) -> dict | None:
        """Conversation + its decoded images (in <image> order) -> tensors; None when it must be
        dropped. ``processed``: the images' (vision, slots) when already computed (one per turn)."""
        vision, slots = processed or (self.image_inputs(images) if images else ({}, []))
        example = encode(conversations, self.tokenizer, self.template, self.image_token_id, slots, self.max_length, self.on_overflow)
        if example is None:
            return None
        return {
            "input_ids": torch.tensor(example.input_ids),
            "labels": torch.tensor(example.labels),
            "vision": vision,
            "images": len(images),
        }
