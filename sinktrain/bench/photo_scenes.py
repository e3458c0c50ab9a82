"""The data throughput benchmark's data set (tools/bench_data.py, sinktrain.bench.data_loading).

Data (built once into ``--work_dir`` and reused while its ``dataset.json`` stamp matches): N synthetic
JPEG scenes (a colour gradient, 4-9 filled shapes and lines, Gaussian noise so the JPEGs are ~30-60 KB
at 336 px, like photos) with LLaVA-format conversations about them (1-4 turns, ``<image>\\n`` opening
the first question), written as a LLaVA JSON + image folder and converted to shards by the two calls
tools/make_shards.py makes (``llava_json_samples`` -> ``write_shards``).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import statistics
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sinktrain.data.shards import llava_json_samples, write_shards

STAMP_VERSION = 1
COLOURS = {
    "red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 210), "yellow": (235, 205, 40),
    "purple": (130, 50, 170), "orange": (240, 130, 30), "white": (240, 240, 240), "black": (25, 25, 25),
}
KINDS = ("circle", "rectangle", "triangle", "line")


def place(x: float, y: float, size: int) -> str:
    column = ("left", "centre", "right")[min(int(3 * x / size), 2)]
    row = ("top", "middle", "bottom")[min(int(3 * y / size), 2)]
    if row == "middle":
        return "in the centre" if column == "centre" else f"on the {column}"
    return f"at the {row}" if column == "centre" else f"in the {row} {column}"


def draw_shape(draw: ImageDraw.ImageDraw, rng: random.Random, size: int) -> dict:
    kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
    fill = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLOURS[colour])
    x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 16, size / 4)
    if kind == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif kind == "rectangle":
        draw.rectangle((x - r, y - r * rng.uniform(0.4, 1), x + r, y + r), fill=fill)
    elif kind == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    else:
        draw.line((x - r, y - r, x + r, y + r * rng.uniform(-1, 1)), fill=fill, width=max(2, size // 60))
    return {"kind": kind, "colour": colour, "place": place(x, y, size), "large": r > size / 7}


def scene_jpeg(rng: random.Random, size: int) -> tuple[bytes, list[dict], tuple[str, str]]:
    """A photo-like JPEG: gradient, shapes, noise (flat drawings compress to a few KB, photos do not)."""
    top, bottom = rng.sample(list(COLOURS), 2)
    fade = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    pixels = np.array(COLOURS[top], np.float32) * (1 - fade) + np.array(COLOURS[bottom], np.float32) * fade
    image = Image.fromarray(np.broadcast_to(pixels, (size, size, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    shapes = [draw_shape(draw, rng, size) for _ in range(rng.randint(4, 9))]
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(8, 20), (size, size, 3))
    noisy = Image.fromarray((np.asarray(image, np.float32) + noise).clip(0, 255).astype(np.uint8))
    out = io.BytesIO()
    noisy.save(out, "JPEG", quality=90)
    return out.getvalue(), shapes, (top, bottom)


def phrase(shape: dict) -> str:
    return f"a {'large' if shape['large'] else 'small'} {shape['colour']} {shape['kind']} {shape['place']}"


def question_answer(rng: random.Random, kind: int, shapes: list[dict], background: tuple[str, str]) -> tuple[str, str]:
    """One of four LLaVA-Instruct-like exchanges: list the shapes, a colour, a count, a detailed description."""
    shape = rng.choice(shapes)
    name, same = shape["kind"], [s for s in shapes if s["kind"] == shape["kind"]]
    if kind == 0:
        return "What shapes can you see in this image?", f"I can see {len(shapes)} shapes: {', '.join(map(phrase, shapes))}."
    if kind == 1:
        return f"What colour is the {name} {shape['place']}?", f"The {name} {shape['place']} is {shape['colour']}."
    if kind == 2:
        count = "is one" if len(same) == 1 else f"are {len(same)}"
        plural = "s" * (len(same) > 1)
        listed = "; ".join(map(phrase, same))
        return f"How many {name}s are there in the picture?", f"There {count} {name}{plural}: {listed}."
    details = " ".join(f"There is {phrase(s)}." for s in shapes)
    return "Describe the image in detail.", (
        f"The background fades from {background[0]} at the top to {background[1]} at the bottom. {details} The picture is "
        "slightly grainy, like a photograph of a poster, and the bold colours stand out clearly against the background."
    )


def conversation(rng: random.Random, shapes: list[dict], background: tuple[str, str]) -> list[dict]:
    turns = []
    for turn, kind in enumerate(rng.sample(range(4), rng.randint(1, 4))):  # no question asked twice
        question, answer = question_answer(rng, kind, shapes, background)
        opening = "<image>\n" if turn == 0 else ""
        turns += [{"from": "human", "value": opening + question}, {"from": "gpt", "value": answer}]
    return turns


def stamp_of(args) -> dict:
    return {"version": STAMP_VERSION, "samples": args.samples, "image_size": args.image_size, "seed": args.seed,
            "samples_per_shard": args.samples_per_shard}


def prepare_data(args) -> dict:
    """The LLaVA JSON, image folder and shards in --work_dir (built unless its stamp matches)."""
    work = Path(args.work_dir)
    paths = {"json": work / "llava.json", "image_folder": work / "images", "shard_dir": work / "shards"}
    stamp_path = work / "dataset.json"
    if not (stamp_path.is_file() and json.loads(stamp_path.read_text()).get("stamp") == stamp_of(args)):
        stamp_path.unlink(missing_ok=True)  # written last: an interrupted build is rebuilt
        for folder in (paths["image_folder"], paths["shard_dir"]):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        rng, records, sizes = random.Random(args.seed), [], []
        for index in range(args.samples):
            jpeg, shapes, background = scene_jpeg(rng, args.image_size)
            (paths["image_folder"] / f"{index:06d}.jpg").write_bytes(jpeg)
            turns = conversation(rng, shapes, background)
            records.append({"id": f"scene-{index:06d}", "image": f"{index:06d}.jpg", "conversations": turns})
            sizes.append(len(jpeg))
        paths["json"].write_text(json.dumps(records))
        shards = write_shards(llava_json_samples(str(paths["json"]), str(paths["image_folder"])),
                              str(paths["shard_dir"] / "%06d.tar"), args.samples_per_shard)
        summary = {"samples": args.samples, "shard_files": len(shards), "jpeg_kb_mean": statistics.mean(sizes) / 1000,
                   "jpeg_kb_min": min(sizes) / 1000, "jpeg_kb_max": max(sizes) / 1000}
        stamp_path.write_text(json.dumps({"stamp": stamp_of(args), "summary": summary}))
    return {**{name: str(path) for name, path in paths.items()}, **json.loads(stamp_path.read_text())["summary"]}
