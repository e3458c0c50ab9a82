"""The ReW demo set: two kinds of question whose answers need different visual tokens, so ReW has
a direction to learn (DIYSink, "To Sink or Not to Sink", Sec. 4.2, plots ReW's weights per task
type).

Each record is a demo sample with an image and its first question; its answer is what the
family's trained demo model says when it sees only some of the visual tokens. The model is the one
ReW starts from on the demo (the DualMLP of its own projector, V-sinks first), the selection the
one CoT routing uses (sinktrain.modeling.slot_select, masked out of attention):

* category "global" (count and caption questions): the answer given from the V-sinks alone;
* category "local" (colour, shape and size questions): the answer given from the other tokens alone.

A global answer needs the sinks and not the rest, a local one the reverse; at ReW's start
(w_sink, w_non) = (1, 1) the model sees both. So ReW should turn the other tokens down for global
questions and keep them up for local ones. Where a global question's two answers differ (the
captions) it does: w_non 0.00-0.21 (Qwen2.5-VL on 2 ZeRO-3 ranks, 10 epochs, seeds 0-3); where
they agree (most counts), and for local questions above w_non ~0.3, the loss is flat and the
weights stay anywhere in it (local: 0.4-1.6). A pre-norm LLM sees a token's direction, not its
size, so scaling visual tokens changes answers only near 0, and ``w_sink`` matters least: the few
sink tokens (LLaVA's demo V-sinks, norm ~170 against ~5-50 for the other tokens and the layers'
updates) change nothing above w ~ 0.1, while scaling every other visual token shifts the balance
between the image and the text. Built reproducibly (greedy
decoding, one torch thread) into the cache, SHARDS shards holding PER_KIND samples of each kind.
"""

from __future__ import annotations

from pathlib import Path

from sinktrain.data.scenes import demo_samples

GLOBAL, LOCAL = ("count", "caption"), ("colour", "shape", "size")
KINDS = {"global": ("sink", GLOBAL), "local": ("non", LOCAL)}  # kind -> (the tokens it is answered from, categories)
PER_KIND, SHARDS, SEED = 120, 8, 11  # 8 shards: 2 ranks x 2 workers and more
MAX_ANSWER_TOKENS = 16  # captions are the longest answers
BATCH = 16


def pick_samples(seed: int = SEED) -> dict[str, list[tuple[dict, bytes]]]:
    """PER_KIND demo samples with an image per kind, by their record's category."""
    picked: dict[str, list] = {kind: [] for kind in KINDS}
    for record, png in demo_samples(20 * PER_KIND, seed):
        kind = next((k for k, (_, categories) in KINDS.items() if record["category"] in categories), None)
        if png is not None and kind is not None and len(picked[kind]) < PER_KIND:
            picked[kind].append((record, png))
    if any(len(samples) < PER_KIND for samples in picked.values()):
        raise RuntimeError(f"the demo stream gave too few samples per kind: {[len(s) for s in picked.values()]}")
    return picked


def answers_from(backbone, samples: list[tuple[dict, bytes]], part: str) -> list[str]:
    """The model's greedy answers to each sample's first question, seeing only ``part``'s visual tokens."""
    import io

    from PIL import Image

    from sinktrain.modeling.slot_select import SELECTIONS, selecting_slots
    from sinktrain.data.eval_set import EvalSample
    from sinktrain.eval.generate import generate_batch

    template = backbone.check_template(None)
    answers = []
    for start in range(0, len(samples), BATCH):
        chunk = [
            EvalSample(record["id"], record["category"], record["conversations"][:1], "", (Image.open(io.BytesIO(png)).convert("RGB"),))
            for record, png in samples[start:start + BATCH]
        ]
        with selecting_slots(backbone, SELECTIONS[part], by_mask=True):
            answers += [text.strip() for text in generate_batch(backbone, chunk, template, MAX_ANSWER_TOKENS)]
    return answers


def build(trained_model: Path, out_dir: Path) -> None:
    from sinktrain.backbones.registry import load_backbone
    from sinktrain.data.shards import write_shards
    from sinktrain.demo.cache import reproducible
    from sinktrain.diysink.attach import attach_dual_mlp

    backbone = load_backbone(str(trained_model))
    attach_dual_mlp(backbone)
    backbone.model.eval()
    kinds = {}
    with reproducible(SEED):
        for kind, samples in pick_samples().items():
            part = KINDS[kind][0]
            kinds[kind] = [
                ({**record, "task": record["category"], "category": kind,
                  "conversations": [record["conversations"][0], {"from": "gpt", "value": answer or "none"}]}, png, "png")
                for (record, png), answer in zip(samples, answers_from(backbone, samples, part))
            ]
    records = [record for pair in zip(*kinds.values()) for record in pair]  # the kinds alternate in every shard
    out_dir.mkdir(parents=True)
    write_shards(records, str(out_dir / "rew-%06d.tar"), max_samples_per_shard=len(records) // SHARDS)


def shard_pattern(directory: Path) -> str:
    return str(directory / ("rew-{000000..%06d}.tar" % (SHARDS - 1)))
