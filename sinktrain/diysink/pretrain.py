"""DIYSink stage 1: pretrain the DualMLP's two projectors separately ("To Sink or Not to Sink",
Sec. 4), vision tower and LLM frozen.

``f_sink`` learns from sink-only visual input and ``f_non`` from non-sink-only input: in each
pass the LLM receives only that projector's tokens (the other visual slots are removed from its
input, sinktrain.modeling.slot_select), with the caption's next-token loss. With both
projectors training, one step runs both passes on the same batch and adds their losses; each
projector's gradient then comes from its own pass only (the other pass drops its tokens, so it
adds exact zeros), and the optimizer (Adam, per-parameter) and schedule treat each alike, so
each learns what a run of its own would learn. What would couple them is refused: global
gradient clipping (one norm over both) and fp16's shared loss scale (an overflow in one pass
skips the other's step).
"""

from __future__ import annotations

import os
import tarfile

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.modeling.slot_select import SELECTIONS, compacted_lm_loss, selecting_slots
from sinktrain.data.batch import Batch
from sinktrain.data.shard_format import IMAGE_EXTENSIONS
from sinktrain.modeling.connector import DualMLPConnector
from sinktrain.errors import SinkTrainError

PARTS = {"sink": ("sink",), "non": ("non",), "both": ("sink", "non")}


def check_independent(parts: tuple[str, ...], max_grad_norm: float, precision: str) -> None:
    if len(parts) < 2:
        return
    if max_grad_norm > 0:
        raise SinkTrainError(
            f"--connector both with --max_grad_norm {max_grad_norm}: one clipping norm over both projectors couples "
            "them (a large gradient in one shrinks the other's step); pass --max_grad_norm 0 (this recipe's default), "
            "or train them in separate runs (--connector sink, --connector non)"
        )
    if precision == "fp16":
        raise SinkTrainError(
            "--connector both with fp16: one loss scale for both projectors couples them (an overflow in one pass "
            "skips the other's step); use --precision bf16 or fp32, or train them in separate runs"
        )


def check_has_images(shards: list[str], members: int = 1000) -> None:
    """Refuse data whose first local shard starts with ``members`` members and no image: stage 1
    learns from images alone (a text-only sample gives a projector nothing; the stream skips it)."""
    first = shards[0]
    if not os.path.isfile(first):
        return  # remote shards: text-only samples are skipped and counted as the stream meets them
    with tarfile.open(first) as tar:
        names = [member.name for _, member in zip(range(members), tar)]
    if not any(name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS for name in names):
        raise SinkTrainError(
            f"{first} holds no image in its first {len(names)} members: stage-1 pretraining trains the connector on "
            "images, so text-only data gives it nothing to learn; pass image-caption shards (e.g. LLaVA-Pretrain's "
            "blip_laion_cc_sbu_558k through tools/make_shards.py)"
        )


def make_trainable(backbone: Backbone, connector: DualMLPConnector, parts: tuple[str, ...]) -> None:
    """Freeze everything, then unfreeze the chosen projector(s)."""
    backbone.model.requires_grad_(False)
    for part in parts:
        getattr(connector, f"f_{part}").requires_grad_(True)


def selecting(backbone: Backbone, part: str):
    """Forwards inside the block give the LLM only ``part``'s visual slots ("sink" or "non")."""
    return selecting_slots(backbone, SELECTIONS[part])


class SeparatePretraining:
    """The stage-1 loss: one pass per trained projector, each on its own tokens, summed."""

    def __init__(self, backbone: Backbone, parts: tuple[str, ...]):
        self.backbone, self.parts = backbone, parts
        self.last_losses: dict[str, torch.Tensor] = {}  # detached; read when logged, not every step

    def part_loss(self, batch: Batch, part: str) -> torch.Tensor:
        backbone = self.backbone
        with selecting(backbone, part):
            logits = backbone.model(**backbone.model_inputs(batch.input_ids, batch.attention_mask, batch.vision)).logits
            return compacted_lm_loss(logits, batch.labels, backbone.slots.compaction)

    def __call__(self, batch: Batch) -> torch.Tensor:
        losses = {part: self.part_loss(batch, part) for part in self.parts}
        self.last_losses = {part: loss.detach() for part, loss in losses.items()}
        return sum(losses.values())

    def metrics(self) -> dict:
        return {
            **{f"diysink/loss_{part}": loss.item() for part, loss in self.last_losses.items()},
            "diysink/sinks_per_image": self.backbone.slots.sinks_per_image,
        }
