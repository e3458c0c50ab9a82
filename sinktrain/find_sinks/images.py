"""The images find_sink_dims.py profiles, split over ranks, and the prompts they are fed with.

    items = shard_items("shards/{000000..000009}.tar", num_images=300, rank=0, world_size=1)
    items = folder_items("photos/", num_images=300, rank=0, world_size=1)
    for chunk in batched(items, 8):
        input_ids, attention_mask, vision = PromptEncoder(backbone, "v1")(chunk)

The first ``num_images`` images (shards in order, no shuffling; a folder's files sorted by path)
are numbered 0, 1, ...; rank r takes those with number % world_size == r, so every image is seen
exactly once over all ranks and the summed statistics equal a one-rank run's. Images are decoded
one batch at a time, so memory does not grow with ``num_images``. A single-image shard sample
brings its first question (prefill sees the conversation's real start); a plain image, and each
image of a multi-image sample, gets GENERIC_QUESTION.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
import webdataset as wds
from PIL import Image

from sinktrain.backbones.base import Backbone
from sinktrain.data.encode import decode_image, image_members
from sinktrain.data.shards import IMAGE_EXTENSIONS
from sinktrain.data.stream import BadSample, expand_shards
from sinktrain.data.chat import encode_prompt
from sinktrain.data.chat.conversation import HUMAN, IMAGE_PLACEHOLDER
from sinktrain.data.images import concat_vision
from sinktrain.errors import SinkTrainError

logger = logging.getLogger("sinktrain")

GENERIC_QUESTION = f"{IMAGE_PLACEHOLDER}\nDescribe the image."


@dataclass
class Item:
    image: Image.Image
    question: str  # the first human turn, with the <image> placeholder


def first_question(raw: dict) -> str:
    """The sample's first human turn (with <image>), or GENERIC_QUESTION when it has none."""
    try:
        turn = json.loads(raw["json"])["conversations"][0]
    except (KeyError, IndexError, TypeError, ValueError):
        return GENERIC_QUESTION
    if not isinstance(turn, dict) or turn.get("from") != HUMAN or not isinstance(turn.get("value"), str):
        return GENERIC_QUESTION
    question = turn["value"]
    return question if IMAGE_PLACEHOLDER in question else f"{IMAGE_PLACEHOLDER}\n{question}"


def sample_images(raw: dict) -> list[tuple[str, bytes]]:
    """The sample's images in <image> order; none (skipped with a warning) when their layout is broken."""
    try:
        return image_members(raw)
    except BadSample as err:
        logger.warning("skipping sample %s in %s: %s", raw.get("__key__"), raw.get("__url__"), err)
        return []


def shard_items(spec: str, num_images: int, rank: int, world_size: int) -> Iterator[Item]:
    """This rank's share of the first ``num_images`` images of the shards (text-only samples
    skipped). Each image of a multi-image sample is profiled on its own, with GENERIC_QUESTION."""
    # The split by image number is ours: WebDataset must not split by node or worker again.
    samples = wds.WebDataset(expand_shards(spec), shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
    number = 0
    for raw in samples:
        members = sample_images(raw)
        for name, data in members:
            if number >= num_images:
                return
            number, mine = number + 1, number % world_size == rank
            if not mine:
                continue
            try:
                yield Item(decode_image(data, name), first_question(raw) if len(members) == 1 else GENERIC_QUESTION)
            except BadSample as err:
                logger.warning("skipping image %s of sample %s in %s: %s", name, raw.get("__key__"), raw.get("__url__"), err)


def image_files(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise SinkTrainError(f"--images {folder} is not a directory; pass a folder of image files ({', '.join(IMAGE_EXTENSIONS)})")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise SinkTrainError(f"--images {folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); pass a folder with images")
    return files


def folder_items(folder: str, num_images: int, rank: int, world_size: int) -> Iterator[Item]:
    for number, path in enumerate(image_files(folder)[:num_images]):
        if number % world_size != rank:
            continue
        try:
            yield Item(decode_image(path.read_bytes()), GENERIC_QUESTION)
        except BadSample as err:
            logger.warning("skipping %s: %s", path, err)


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class PromptEncoder:
    """Items -> right-padded prompt ids, attention mask and the model's image inputs (prefill inputs)."""

    def __init__(self, backbone: Backbone, template: str):
        self.backbone, self.template = backbone, backbone.check_template(template)

    def prompt(self, question: str, slots: list[int]) -> list[int]:
        b = self.backbone
        try:
            return encode_prompt([{"from": HUMAN, "value": question}], b.tokenizer, self.template, b.image_token_id, slots)
        except SinkTrainError:  # a question the template refuses: the image is what is profiled
            return encode_prompt([{"from": HUMAN, "value": GENERIC_QUESTION}], b.tokenizer, self.template, b.image_token_id, slots)

    def __call__(self, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        encoded = [self.backbone.image_inputs([item.image]) for item in items]
        prompts = [self.prompt(item.question, slots) for item, (_, slots) in zip(items, encoded)]
        length = max(len(p) for p in prompts)
        pad = self.backbone.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        input_ids = torch.tensor([p + [pad] * (length - len(p)) for p in prompts])
        attention_mask = torch.tensor([[1] * len(p) + [0] * (length - len(p)) for p in prompts])
        return input_ids, attention_mask, concat_vision([vision for vision, _ in encoded])
