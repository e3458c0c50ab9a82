"""The overhead benchmark's inputs, built through sinktrain's own data path from synthetic samples.

Each sample is one random-noise image (its size from the family: LLaVA's square, Qwen's
dynamic-resolution aspect ratios) and a one-turn conversation of random words from the demo
vocabulary, long enough that the sample has about ``text_tokens`` text tokens (chat template
included). Training batches go through ``backbone.encoder()`` and ``backbone.collator()``
(right padding, labels on the answer); generation prompts through the evaluation path
(``sinktrain.eval.generate.prompt_inputs``: the first question in the chat format, left padding,
``backbone.model_inputs``). The V-sink threshold is chosen on the benchmark's own images.
"""

from __future__ import annotations

import torch
from PIL import Image

from sinktrain.data.batch import Batch
from sinktrain.data.chat import encode
from sinktrain.data.eval_set import EvalSample
from sinktrain.data.scenes import vocabulary_sentences
from sinktrain.eval.generate import prompt_inputs

ANSWER_SHARE = 3  # one word in ANSWER_SHARE is the answer's


def noise_image(size: tuple[int, int], generator: torch.Generator) -> Image.Image:
    width, height = size
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def conversation(words: list[str], count: int, generator: torch.Generator) -> list[dict]:
    picked = [words[i] for i in torch.randint(len(words), (max(count, 2),), generator=generator).tolist()]
    answer = max(1, len(picked) // ANSWER_SHARE)
    return [
        {"from": "human", "value": "<image>\n" + " ".join(picked[:-answer])},
        {"from": "gpt", "value": " ".join(picked[-answer:])},
    ]


def sized_conversation(backbone, slots: list[int], text_tokens: int, words: list[str], seed: int) -> list[dict]:
    """The shortest random conversation (of the words drawn from ``seed``) whose sample has at
    least ``text_tokens`` text tokens, template included (at least two words)."""
    template = backbone.default_template
    for count in range(2, 8 * text_tokens + 3):
        conversations = conversation(words, count, torch.Generator().manual_seed(seed))
        example = encode(conversations, backbone.tokenizer, template, backbone.image_token_id, slots)
        if len(example.input_ids) - sum(slots) >= text_tokens:
            break
    return conversations


def synthetic_samples(backbone, family, args, generator: torch.Generator) -> list[tuple[list[dict], Image.Image, list[int]]]:
    """(conversation, image, its slots) for ``args.batch`` samples, drawn from ``generator``."""
    words = sorted({word for sentence in vocabulary_sentences() for word in sentence.split()})
    samples = []
    for index in range(args.batch):
        image = noise_image(family.image_size(args, index), generator)
        slots = backbone.image_inputs([image])[1]
        seed = int(torch.randint(1 << 30, (1,), generator=generator))
        samples.append((sized_conversation(backbone, slots, args.text_tokens, words, seed), image, slots))
    return samples


def as_prompts(samples: list[tuple[list[dict], Image.Image, list[int]]]) -> list[EvalSample]:
    """The samples' first questions as generation prompts (the evaluation path's samples)."""
    return [EvalSample(key=str(i), category="bench", question=c[:1], answer="", images=(image,)) for i, (c, image, _) in enumerate(samples)]


def build_inputs(backbone, family, args, generator: torch.Generator) -> tuple[Batch, dict, list[int]]:
    """(training batch, generate() keyword arguments, slots per image) for ``args.batch`` samples."""
    samples = synthetic_samples(backbone, family, args, generator)
    encoder = backbone.encoder()
    examples = [{**encoder.encode(c, [image]), "lane": 0, "index": i, "bad": 0} for i, (c, image, _) in enumerate(samples)]
    batch, _ = backbone.collator()(examples)
    prompt = prompt_inputs(backbone, as_prompts(samples), backbone.default_template)
    return batch, prompt, [slot for _, _, slots in samples for slot in slots]


@torch.no_grad()
def pick_tau(model, connector: torch.nn.Module, group: int, vision: dict, images: int, dim: int, per_image: int) -> float:
    """A threshold on channel ``dim`` of the connector's input that makes ~``per_image`` slots per
    image V-sinks (a slot of ``group`` connector rows is one when any of its rows reaches tau)."""
    captured = []
    handle = connector.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model.model.get_image_features(**vision)
    finally:
        handle.remove()
    values = torch.cat([features[..., dim].abs().reshape(-1, group).amax(dim=-1) for features in captured])
    ranked = values.sort(descending=True).values
    return float(ranked[min(per_image * images, ranked.numel()) - 1])
