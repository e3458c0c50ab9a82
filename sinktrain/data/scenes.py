"""Synthetic demo scenes: a small visual-QA task a tiny model can actually learn.

Each image holds 1-4 copies of ONE shape in ONE colour and ONE size on a plain background, so
every question (count, colour, shape, size, caption) has a single exact answer. A small magenta
square sits in one corner, under the objects, like a web image's watermark: no question asks
about it, and it is where the tiny Qwen-VL demos plant their V-sinks (sinktrain.demo.qwen2_vl). A few samples
are text-only (colour mixing, small sums) so the text-only path of the trainer is exercised too.

    from sinktrain.data.scenes import demo_samples
    for record, png in demo_samples(num_samples=8, seed=0):
        print(record["conversations"])

Questions about 2 or 3 such images (multi-image training, LLaVA-OneVision) are in
``sinktrain.data.multi_scenes``.

Records are in LLaVA format; `sinktrain.data.shards.write_demo_shards` turns them into shards.
Everything is drawn from one `random.Random(seed)`, so a seed fully determines the data.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageDraw

IMAGE_SIZE = 96  # pixels per side; small enough to keep demo shards a few MB
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}
# Side length of an object's bounding box. Each object sits in its own 48x48 quadrant, so even
# four large ones never touch and the count stays visually unambiguous.
SIZES = {"small": 22, "large": 40}  # large enough to dominate a quadrant's patches
MAX_COUNT = 4
MARK_COLOUR, MARK_SIZE = (200, 0, 200), 16  # the corner watermark: a colour no object has, about as bright as grey
CELL = IMAGE_SIZE // 2
MARGIN = 2  # keeps objects in neighbouring quadrants at least 2 * MARGIN pixels apart

MULTI_TURN_FRACTION = 0.2
TEXT_ONLY_FRACTION = 0.05

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTIONS = {
    "count": (
        "How many objects are in the image?",
        "How many shapes can you see?",
        "Count the shapes in the image.",
    ),
    "colour": (
        "What colour are the objects?",
        "What is the colour of the shapes?",
        "Which colour do the shapes have?",
    ),
    "shape": (
        "What shape are the objects?",
        "Which shape is shown?",
        "What kind of shape is in the image?",
    ),
    "size": (
        "Are the shapes small or large?",
        "What size are the objects?",
        "Is the shape small or large?",
    ),
    "caption": (
        "Describe the image.",
        "Write a short caption for the image.",
        "What does the image show?",
    ),
}
CATEGORIES = tuple(QUESTIONS)
# Primary-colour mixes whose result is itself one of the scene colours.
MIXES = {("red", "yellow"): "orange", ("red", "blue"): "purple", ("blue", "yellow"): "green"}
MIX_QUESTION = "What colour do you get by mixing {a} and {b}?"
SUM_QUESTION = "What is {a} plus {b}?"


@dataclass(frozen=True)
class Scene:
    shape: str  # one of SHAPES
    colour: str  # a key of COLOURS
    size: str  # a key of SIZES
    count: int  # 1..MAX_COUNT
    background: str  # a key of BACKGROUNDS
    mark_corner: int = 0  # 0..3: top-left, top-right, bottom-left, bottom-right


def random_scene(rng: random.Random) -> Scene:
    return Scene(
        shape=rng.choice(SHAPES),
        colour=rng.choice(sorted(COLOURS)),
        size=rng.choice(sorted(SIZES)),
        count=rng.randint(1, MAX_COUNT),
        background=rng.choice(sorted(BACKGROUNDS)),
        mark_corner=rng.randrange(4),
    )


def object_boxes(scene: Scene, rng: random.Random) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1 inclusive) of the objects, one per chosen quadrant."""
    side = SIZES[scene.size]
    slack = CELL - side - 2 * MARGIN  # how far an object may wander inside its quadrant
    quadrants = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], scene.count)
    boxes = []
    for qx, qy in quadrants:
        x0 = qx * CELL + MARGIN + rng.randint(0, slack)
        y0 = qy * CELL + MARGIN + rng.randint(0, slack)
        boxes.append((x0, y0, x0 + side - 1, y0 + side - 1))
    return boxes


def draw_scene(scene: Scene, rng: random.Random | None = None) -> Image.Image:
    """Draw the scene; object positions come from `rng` (a fixed default keeps it reproducible)."""
    rng = rng or random.Random(0)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)  # no anti-aliasing: object pixels are exactly the colour
    x, y = (scene.mark_corner % 2) * (IMAGE_SIZE - MARK_SIZE), (scene.mark_corner // 2) * (IMAGE_SIZE - MARK_SIZE)
    draw.rectangle((x, y, x + MARK_SIZE - 1, y + MARK_SIZE - 1), fill=MARK_COLOUR)
    fill = COLOURS[scene.colour]
    for x0, y0, x1, y1 in object_boxes(scene, rng):
        if scene.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif scene.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def caption(scene: Scene) -> str:
    noun = scene.shape if scene.count == 1 else scene.shape + "s"
    number = NUMBER_WORDS[scene.count].capitalize()
    return f"{number} {scene.size} {scene.colour} {noun} on a {scene.background} background."


def answer(scene: Scene, category: str) -> str:
    return {
        "count": str(scene.count),
        "colour": scene.colour,
        "shape": scene.shape,
        "size": scene.size,
        "caption": caption(scene),
    }[category]


def qa_turns(question: str, reply: str, with_image: bool) -> list[dict]:
    prefix = "<image>\n" if with_image else ""
    return [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": reply}]


def scene_records(scene: Scene, key: str, rng: random.Random) -> list[dict]:
    """One LLaVA record per category, all about the same image `{key}.png`.

    About MULTI_TURN_FRACTION of them carry a second question from another category. Callers
    that want one sample per image (like `demo_samples`) pick one; an evaluation can ask all.
    """
    records = []
    for category in CATEGORIES:
        conversations = qa_turns(rng.choice(QUESTIONS[category]), answer(scene, category), True)
        if rng.random() < MULTI_TURN_FRACTION:
            second = rng.choice([c for c in CATEGORIES if c != category])
            conversations += qa_turns(rng.choice(QUESTIONS[second]), answer(scene, second), False)
        records.append(
            {"id": key, "image": f"{key}.png", "category": category, "conversations": conversations}
        )
    return records


def text_only_record(key: str, rng: random.Random) -> dict:
    """A question with no image, so the trainer's text-only path gets real samples."""
    if rng.random() < 0.5:
        (a, b), result = rng.choice(sorted(MIXES.items()))
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        question, reply = MIX_QUESTION.format(a=a, b=b), result
    else:
        a = rng.randint(0, 9)
        b = rng.randint(0, 9 - a)  # keep the answer a single digit
        question, reply = SUM_QUESTION.format(a=a, b=b), str(a + b)
    return {"id": key, "category": "other", "conversations": qa_turns(question, reply, False)}


def demo_samples(num_samples: int, seed: int) -> Iterator[tuple[dict, bytes | None]]:
    """Yield (LLaVA record, PNG bytes or None for a text-only sample), reproducibly from `seed`."""
    rng = random.Random(seed)
    for index in range(num_samples):
        key = f"demo-{index:06d}"
        if rng.random() < TEXT_ONLY_FRACTION:
            yield text_only_record(key, rng), None
            continue
        yield single_image_sample(key, rng)


def caption_samples(num_samples: int, seed: int) -> Iterator[tuple[dict, bytes]]:
    """Image-caption pairs (connector pretraining data, like LLaVA-Pretrain's): every sample has an
    image, and its one answer is the scene's caption."""
    rng = random.Random(seed)
    for index in range(num_samples):
        scene = random_scene(rng)
        image = draw_scene(scene, rng)
        record = {"id": f"caption-{index:06d}", "image": f"caption-{index:06d}.png", "category": "caption"}
        record["conversations"] = qa_turns(rng.choice(QUESTIONS["caption"]), caption(scene), True)
        yield record, png_bytes(image)


def single_image_sample(key: str, rng: random.Random) -> tuple[dict, bytes]:
    """A random scene and one question about it (one of scene_records): (record, PNG)."""
    scene = random_scene(rng)
    image = draw_scene(scene, rng)
    return rng.choice(scene_records(scene, key, rng)), png_bytes(image)


def vocabulary_sentences() -> list[str]:
    """Every string the demo can put in a question, answer or caption (tokenizer training text)."""
    sentences = [q for questions in QUESTIONS.values() for q in questions]
    sentences += list(SHAPES) + sorted(COLOURS) + sorted(SIZES) + sorted(BACKGROUNDS)
    sentences += [str(n) for n in range(10)] + list(NUMBER_WORDS)
    sentences += [
        caption(Scene(shape, colour, size, count, background))
        for shape in SHAPES
        for colour in COLOURS
        for size in SIZES
        for count in range(1, MAX_COUNT + 1)
        for background in BACKGROUNDS
    ]
    for a, b in MIXES:
        sentences += [MIX_QUESTION.format(a=a, b=b), MIX_QUESTION.format(a=b, b=a)]
    sentences += [SUM_QUESTION.format(a=a, b=b) for a in range(10) for b in range(10 - a)]
    return sentences
