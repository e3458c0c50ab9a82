"""The demo scenes: reproducible, valid LLaVA records, and answers that match the pixels.

    python -m pytest tests/data/test_scenes.py -q
"""

import io
import random

import numpy as np
import sentencepiece as spm
from PIL import Image

from sinktrain.data import scenes
from sinktrain.data.scenes import Scene, demo_samples, draw_scene, scene_records

MAGENTA = (200, 0, 200)  # written out here, so a change in scenes.py fails these tests


def blobs(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, each as an array of (row, col) pixels."""
    seen = np.zeros_like(mask)
    found = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        stack, pixels = [start], []
        while stack:
            r, c = stack.pop()
            pixels.append((r, c))
            for nr in range(max(r - 1, 0), min(r + 2, mask.shape[0])):
                for nc in range(max(c - 1, 0), min(c + 2, mask.shape[1])):
                    if mask[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        stack.append((nr, nc))
        found.append(np.array(pixels))
    return found


def measure(image: Image.Image) -> Scene:
    """Read a scene back from its pixels alone, independently of how it was drawn."""
    pixels = np.asarray(image)
    last = scenes.IMAGE_SIZE - 1
    corners = [tuple(pixels[r, c]) for r, c in ((0, 0), (0, last), (last, 0), (last, last))]  # no object reaches them
    assert corners.count(MAGENTA) == 1, f"corner pixels {corners}: not exactly one watermark"
    mark_corner = corners.index(MAGENTA)
    rest = {rgb for rgb in corners if rgb != MAGENTA}
    assert len(rest) == 1, f"corner pixels {corners}: the background is not one colour"
    background = next(n for n, rgb in scenes.BACKGROUNDS.items() if rest == {rgb})
    colour = next(n for n, rgb in scenes.COLOURS.items() if (pixels == rgb).all(-1).any())
    parts = blobs((pixels == scenes.COLOURS[colour]).all(-1))
    sides = {int(np.ptp(p[:, 0])) + 1 for p in parts} | {int(np.ptp(p[:, 1])) + 1 for p in parts}
    assert len(sides) == 1, f"objects of different sizes: {sides}"
    side = sides.pop()
    size = next(n for n, s in scenes.SIZES.items() if s == side)
    fills = {round(len(p) / side**2, 1) for p in parts}  # 1.0 square, ~0.8 circle, ~0.5 triangle
    assert len(fills) == 1, f"objects of different shapes: {fills}"
    shape = {1.0: "square", 0.8: "circle", 0.5: "triangle"}[fills.pop()]
    return Scene(shape, colour, size, len(parts), background, mark_corner)


def mark_box(corner: int) -> tuple[slice, slice]:
    """(rows, cols) of a 16x16 watermark in corner 0..3 (top-left, top-right, bottom-left, bottom-right)."""
    far = slice(scenes.IMAGE_SIZE - 16, scenes.IMAGE_SIZE)
    return (far if corner >= 2 else slice(0, 16)), (far if corner % 2 else slice(0, 16))


def check_mark(image: Image.Image, scene: Scene) -> int:
    """The magenta is exactly the watermark box of `scene.mark_corner` minus the object pixels drawn over it,
    and the box holds nothing else; returns how many of its pixels objects cover."""
    pixels = np.asarray(image)
    magenta = (pixels == MAGENTA).all(-1)
    box = np.zeros_like(magenta)
    box[mark_box(scene.mark_corner)] = True
    covered = box & (pixels == scenes.COLOURS[scene.colour]).all(-1)
    assert (magenta == (box & ~covered)).all(), f"magenta outside the box of corner {scene.mark_corner} or missing"
    return int(covered.sum())


def category_of(question: str) -> str:
    text = question.removeprefix("<image>\n")
    return next(c for c, qs in scenes.QUESTIONS.items() if text in qs)


def test_same_seed_same_samples_other_seed_differs():
    first = list(demo_samples(40, seed=7))
    assert first == list(demo_samples(40, seed=7))
    assert first != list(demo_samples(40, seed=8))


def test_drawn_scene_matches_its_description():
    rng = random.Random(0)
    for _ in range(40):
        scene = scenes.random_scene(rng)
        assert measure(draw_scene(scene, rng)) == scene


def test_every_shape_colour_size_count_is_drawn_right():
    for shape in scenes.SHAPES:
        for size in scenes.SIZES:
            scene = Scene(shape, "purple", size, 4, "grey")
            assert measure(draw_scene(scene)) == scene
    image = draw_scene(Scene("circle", "red", "small", 1, "black"))
    assert image.size == (96, 96) and image.mode == "RGB"


def test_watermark_sits_in_the_scene_corner_under_the_objects():
    for corner in range(4):
        for shape in scenes.SHAPES:  # 4 large objects: one fills each quadrant, over the mark
            scene = Scene(shape, "green", "large", 4, "black", mark_corner=corner)
            image = draw_scene(scene)
            covered = check_mark(image, scene)  # a triangle's apex may leave a top corner's mark bare
            assert covered < 16 * 16 and (covered > 0 or (shape == "triangle" and corner < 2)), (shape, covered)
            assert measure(image) == scene  # every object whole: the mark hides none of its pixels
        lone = Scene("square", "red", "small", 1, "white", mark_corner=corner)
        assert check_mark(draw_scene(lone), lone) >= 0
    rng = random.Random(5)
    drawn = [scenes.random_scene(rng) for _ in range(60)]
    for scene in drawn:
        check_mark(draw_scene(scene, rng), scene)
    assert {s.mark_corner for s in drawn} == {0, 1, 2, 3}
    assert scenes.MARK_COLOUR == MAGENTA and MAGENTA not in scenes.COLOURS.values()
    assert MAGENTA not in scenes.BACKGROUNDS.values()


def test_answers_in_records_match_the_image():
    for record, png in demo_samples(120, seed=1):
        if png is None:
            continue
        truth = measure(Image.open(io.BytesIO(png)))
        turns = record["conversations"]
        for human, gpt in zip(turns[0::2], turns[1::2]):
            assert gpt["value"] == scenes.answer(truth, category_of(human["value"]))


def test_records_are_llava_format():
    samples = list(demo_samples(400, seed=2))
    text_only = multi_turn = 0
    for record, png in samples:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        image_tokens = [t["value"].count("<image>") for t in turns]
        if png is None:
            text_only += 1
            assert "image" not in record and sum(image_tokens) == 0
            assert record["category"] == "other"
        else:
            assert png.startswith(b"\x89PNG")
            assert record["image"] == record["id"] + ".png"
            assert turns[0]["value"].startswith("<image>\n") and image_tokens[0] == 1
            assert sum(image_tokens) == 1
            assert record["category"] == category_of(turns[0]["value"])
        multi_turn += len(turns) == 4
    assert len({r["id"] for r, _ in samples}) == len(samples)
    assert 5 <= text_only <= 40  # ~5% of 400
    assert 40 <= multi_turn <= 130  # ~20% of the image samples


def test_scene_records_cover_every_category_for_one_image():
    records = scene_records(Scene("square", "blue", "large", 3, "white"), "k", random.Random(0))
    assert [r["category"] for r in records] == list(scenes.CATEGORIES)
    assert {r["id"] for r in records} == {"k"} and {r["image"] for r in records} == {"k.png"}
    caption = next(r for r in records if r["category"] == "caption")["conversations"][1]["value"]
    assert caption == "Three large blue squares on a white background."
    assert scenes.caption(Scene("circle", "red", "small", 1, "grey")) == (
        "One small red circle on a grey background."
    )


def test_text_only_answers_are_right():
    rng = random.Random(3)
    for _ in range(50):
        record = scenes.text_only_record("t", rng)
        question, reply = (t["value"] for t in record["conversations"])
        if "plus" in question:
            a, b = (int(w) for w in question.removesuffix("?").split() if w.isdigit())
            assert reply == str(a + b)
        else:
            assert reply in scenes.COLOURS


def test_vocabulary_covers_every_string_and_trains_a_tokenizer(tmp_path):
    vocabulary = scenes.vocabulary_sentences()
    known = set(vocabulary)
    texts = []
    for record, _ in demo_samples(300, seed=4):
        for turn in record["conversations"]:
            text = turn["value"].removeprefix("<image>\n")
            assert text in known, text
            texts.append(text)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(vocabulary),
        model_prefix=str(tmp_path / "demo"),
        vocab_size=200,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    tokenizer = spm.SentencePieceProcessor(model_file=str(tmp_path / "demo.model"))
    for text in texts:
        assert tokenizer.unk_id() not in tokenizer.encode(text)
        assert tokenizer.decode(tokenizer.encode(text)) == text
