"""A tiny demo model after a short instruction finetune (ViT frozen) on its family's demo data.

The data is what the family's recipes stream by default (``sinktrain.demo.training_data``): the
demo shards, plus the multi-image demo shards for LLaVA-OneVision; trained on single images only,
OneVision met multi-image samples first under LSG, where their losses swamped the gates' signal.

Methods that act on a trained model (LSG gates, evaluation, the oracle sweep) start from it; the
random demo model is the starting point of finetuning. After 450 steps it has learned the answer
formats and reads colour and size from the image (shape and count only partly).

One twist makes LSG's effect visible on a model this small. The LSG paper finds layers whose best
balance between V-sinks and other visual tokens is far from the stock one ("when sinks help or
hurt"); a 4-layer model finetuned for a minute has none, and gates on it move the loss by less
than the run-to-run noise. So during this finetune layer SINK_READING_LAYER sees visual tokens
through fixed LSG key coefficients (c_sink, c_rest) = SINK_READING_COEFFICIENTS: it learns to read
V-sinks only. The saved model has no gates, so at the stock coefficients (1, 1) that layer gets
visual keys it never learned to use; LSG's gates (and the oracle sweep) find the way back.

The finetune runs in one process on a fixed torch thread count under ``reproducible``, so the
weights are the same bytes on every build. Each demo sample is encoded (image processing,
tokenization) once per build and remembered: 450 x 16 draws visit the 2,400 demo samples (2,720
with the multi-image ones) about three times, and encoding is a pure function of the sample, so remembering changes the time, not the bytes.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Callable

import torch

from sinktrain.demo.cache import reproducible
from sinktrain.demo.data import demo_data_pattern

SEED = 0

PRETRAIN_STEPS, PRETRAIN_BATCH, PRETRAIN_LR, PRETRAIN_WARMUP = 450, 16, 2e-3, 22
SINK_READING_LAYER = 2
SINK_READING_COEFFICIENTS = (2.0, 0.0)  # V-sink keys x2, other visual keys x0: r_sink = 1


class EncodedOnce:
    """A sample encoder that encodes every shard sample once and then hands out copies.

    Copies, because the stream adds its position to each example and nothing downstream may
    change what later epochs get."""

    def __init__(self, encode: Callable[[dict], dict]):
        self.encode, self.examples = encode, {}

    def __call__(self, raw: dict) -> dict:
        key = (raw["__url__"], raw["__key__"])
        if key not in self.examples:
            self.examples[key] = self.encode(raw)
        return copy.deepcopy(self.examples[key])


def pretrain_demo_model(base: Path, out_dir: Path, steps: int = PRETRAIN_STEPS, data: str | None = None) -> None:
    """Finetune the demo model in ``base`` (any family) on ``data`` (default: the demo shards) and
    write the result to ``out_dir``; ``sinktrain.demo.trained_builder`` passes the family's data.

    Fewer ``steps`` run the same code on a shorter schedule: the reproducibility test's stand-in."""
    from sinktrain.backbones.registry import PROFILE_FILE, load_backbone
    from sinktrain.backbones.profiles import save_profile
    from sinktrain.data.stream import expand_shards
    from sinktrain.demo.pretrain_order import demo_examples
    from sinktrain.lsg.scoped import scoped_gating

    backbone = load_backbone(str(base))
    backbone.freeze_vision()
    examples = demo_examples(expand_shards(data or demo_data_pattern()), EncodedOnce(backbone.encoder(max_length=512)), SEED)
    collate = backbone.collator()
    batches = (collate(list(itertools.islice(examples, PRETRAIN_BATCH))) for _ in itertools.count())
    optimizer = torch.optim.AdamW([p for p in backbone.model.parameters() if p.requires_grad], lr=PRETRAIN_LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / PRETRAIN_WARMUP) * (1.0 - step / steps)
    )
    backbone.model.train()
    with reproducible(SEED), scoped_gating(backbone, [SINK_READING_LAYER]) as gating:
        gating.fixed[SINK_READING_LAYER] = torch.tensor(SINK_READING_COEFFICIENTS)
        for _ in range(steps):
            loss = backbone.forward(next(batches)[0]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(backbone.model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    backbone.model.eval().save_pretrained(out_dir)
    backbone.processor.save_pretrained(out_dir)
    save_profile(backbone.sink_profile, out_dir / PROFILE_FILE)
