"""Multi-image demo samples: questions about 2 or 3 demo scenes (sinktrain.data.scenes), for
multi-image training (LLaVA-OneVision).

    from sinktrain.data.multi_scenes import multi_image_samples
    for record, pngs in multi_image_samples(num_samples=8, seed=0):
        print(record["conversations"])

Which image has more shapes, which shows red circles, ...: each answer follows from the scenes,
which are adjusted so it is unique. A few single-image and text-only samples are mixed in, all
drawn from one ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Iterator

from sinktrain.data.scenes import (
    COLOURS, MAX_COUNT, SHAPES, Scene, qa_turns, draw_scene, png_bytes, random_scene, single_image_sample, text_only_record,
)

ORDINALS = ("first", "second", "third")
MULTI_QUESTIONS = {  # category -> (number of images, question); answers: multi_question
    "more": (2, "Which image has more shapes, the first or the second?"),
    "same_shape": (2, "Do the two images show the same shape?"),
    "find": (3, "Which image shows {colour} {shape}s?"),
    "total": (3, "How many shapes are there in the three images together?"),
    "nth_colour": (0, "What colour are the shapes in the {nth} image?"),  # 0: asked of 2 or 3 images
}
# Share of each kind in multi_image_samples; the rest are 2- and 3-image questions, half each.
MULTI_TEXT_ONLY, MULTI_SINGLE = 0.08, 0.12


def _other(rng: random.Random, options, current):
    return rng.choice([option for option in options if option != current])


def _look(scene: Scene) -> tuple[str, str]:
    return scene.colour, scene.shape


def multi_scenes(category: str, count: int, rng: random.Random) -> list[Scene]:
    """`count` random scenes, adjusted so the category's question has exactly one answer."""
    scenes = [random_scene(rng) for _ in range(count)]
    first, second = scenes[0], scenes[1]
    if category == "more" and first.count == second.count:
        scenes[1] = replace(second, count=_other(rng, range(1, MAX_COUNT + 1), first.count))
    elif category == "same_shape":  # as many yes as no
        shape = first.shape if rng.random() < 0.5 else _other(rng, SHAPES, first.shape)
        scenes[1] = replace(second, shape=shape)
    elif category == "find":  # at least the first scene's colour and shape are shown nowhere else
        scenes[1:] = [replace(s, colour=_other(rng, sorted(COLOURS), first.colour)) if _look(s) == _look(first) else s
                      for s in scenes[1:]]
    return scenes


def multi_question(category: str, scenes: list[Scene], rng: random.Random) -> tuple[str, str]:
    """(question, answer) of a multi-image category about `scenes`, in image order."""
    question = MULTI_QUESTIONS[category][1]
    if category == "more":
        return question, ORDINALS[scenes[1].count > scenes[0].count]
    if category == "same_shape":
        return question, "yes" if scenes[0].shape == scenes[1].shape else "no"
    if category == "total":
        return question, str(sum(s.count for s in scenes))
    if category == "nth_colour":
        nth = rng.randrange(len(scenes))
        return question.format(nth=ORDINALS[nth]), scenes[nth].colour
    looks = [_look(s) for s in scenes]  # "find": ask for a look exactly one image shows
    target = rng.choice([i for i, look in enumerate(looks) if looks.count(look) == 1])
    colour, shape = looks[target]
    return question.format(colour=colour, shape=shape), ORDINALS[target]


def multi_image_record(key: str, count: int, rng: random.Random) -> tuple[dict, list[bytes]]:
    """A question about `count` (2 or 3) scenes: the LLaVA record and the images' PNGs, in order."""
    category = rng.choice([c for c, (n, _) in MULTI_QUESTIONS.items() if n in (0, count)])
    scenes = multi_scenes(category, count, rng)
    pngs = [png_bytes(draw_scene(scene, rng)) for scene in scenes]
    question, reply = multi_question(category, scenes, rng)
    record = {
        "id": key, "image": [f"{key}.{i}.png" for i in range(count)], "category": category,
        "conversations": qa_turns("<image>\n" * (count - 1) + question, reply, True),
    }
    return record, pngs


def multi_image_samples(num_samples: int, seed: int) -> Iterator[tuple[dict, bytes | list[bytes] | None]]:
    """Yield (record, PNG | list of PNGs | None): 2- and 3-image questions with a few single-image
    and text-only samples mixed in (MULTI_SINGLE, MULTI_TEXT_ONLY), reproducibly from `seed`."""
    rng = random.Random(seed)
    for index in range(num_samples):
        key, kind = f"multi-{index:06d}", rng.random()
        if kind < MULTI_TEXT_ONLY:
            yield text_only_record(key, rng), None
        elif kind < MULTI_TEXT_ONLY + MULTI_SINGLE:
            yield single_image_sample(key, rng)
        else:
            yield multi_image_record(key, 2 + (rng.random() < 0.5), rng)
