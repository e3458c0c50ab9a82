"""Data throughput: sinktrain's shard stream against a LLaVA-style map-style loader, same images, same encoder.

Data (built once into ``--work_dir`` and reused while its ``dataset.json`` stamp matches): N synthetic
JPEG scenes (a colour gradient, 4-9 filled shapes and lines, Gaussian noise so the JPEGs are ~30-60 KB
at 336 px, like photos) with LLaVA-format conversations about them (1-4 turns, ``<image>\\n`` opening
the first question), written as a LLaVA JSON + image folder and converted to shards by the two calls
tools/make_shards.py makes (``llava_json_samples`` -> ``write_shards``).

Processing: the demo LLaVA backbone's ``encoder()`` / ``collator()`` (its chat template and tokenizer),
with its image processor (``CLIPImageProcessorPil``, 64 px in the demo) copied and set to LLaVA-1.5's
336 px (resize the shortest edge, centre crop), each image filling (336 / 14)^2 = 576 slots: the
decode a LLaVA-1.5-7B run does per sample (pad to square, resize, crop, normalise, tokenise). The demo
tokenizer is not LLaMA's, so text tokens differ in count and cost (a few ms of the ~15 ms per sample).

Loaders: ``stream``: ``ShardStream`` (one rank, the default lanes: one per worker) in the training
loop's DataLoader. ``map``: like LLaVA's LazySupervisedDataset: the JSON list held in memory,
``__getitem__`` opens ``image_folder/record["image"]`` with PIL and runs the same encoder; a shuffled
sampler. Both read from the page cache after the first round (cold-disk reads are not measured).

Timing: every measurement is a fresh DataLoader; its first ``warmup x workers`` batches (worker
start-up, the stream's first shuffle window) are not timed, the next ``batches`` are: samples/s =
samples / seconds, and the workers' CPU ms per sample (each worker's CPU between its first and last
timed batch, stamped by the collator; steadier than wall time on a shared machine). The stream reads
a lane's raw samples a shuffle window at a time (sinktrain.data.order), so its tar reading lands in a
timed region only at window starts: ``--shuffle_buffer`` (64) is sized so that every worker's timed
batches hold whole windows (the reading is counted at its true share; training's default, 1000,
reads the same bytes in bursts a short region would miss). Rounds repeat all worker counts, the
loaders alternating who goes first, each round with its own seed (stream order, sampler), so neither
times one fixed subset of samples; medians over rounds are reported, ratios pair the same round.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset, RandomSampler

import sinktrain.demo
from sinktrain.backbones.llava import SquareImageInputs
from sinktrain.bench.timing import paired_ratios
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.collate import Collator
from sinktrain.data.encode import first_question
from sinktrain.data.llava_json import load_llava_json
from sinktrain.data.shard_index import shard_sizes
from sinktrain.data.shards import llava_json_samples, write_shards
from sinktrain.data.stream import ShardStream, expand_shards

LOADERS = ("stream", "map")
TARGETS = {"ratio": 1.0, "stream_samples_per_s": 25.0, "at_workers": 4}
STAMP_VERSION = 1
PREFETCH_FACTOR = 2  # batches in flight per worker (DataLoader's default), both loaders
PATCH = 14  # CLIP ViT-L/14: LLaVA-1.5's slots per image are (crop / 14)^2
COLOURS = {
    "red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 210), "yellow": (235, 205, 40),
    "purple": (130, 50, 170), "orange": (240, 130, 30), "white": (240, 240, 240), "black": (25, 25, 25),
}
KINDS = ("circle", "rectangle", "triangle", "line")


# --- the data set ----------------------------------------------------------------------------


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


# --- the two loaders, one encoder --------------------------------------------------------------


def llava15_encoder(image_size: int, max_length: int):
    """The demo LLaVA's encoder and collator with LLaVA-1.5's image processing at ``image_size``."""
    backbone = load_backbone(str(sinktrain.demo.ensure_demo_model("llava")))
    processor = copy.deepcopy(backbone.processor.image_processor)
    processor.size = {"shortest_edge": image_size}
    processor.crop_size = {"height": image_size, "width": image_size}
    image_inputs = SquareImageInputs(processor, (image_size // PATCH) ** 2)
    encoder = backbone.encoder(max_length=max_length)
    encoder.image_inputs = image_inputs  # the encoder's only image path: processing + slots per image
    return encoder, Collator(backbone.tokenizer.pad_token_id, backbone.image_token_id, image_inputs.blank())


class LazyLlavaDataset(Dataset):
    """LLaVA's LazySupervisedDataset in miniature: records in memory, each image opened from the folder."""

    def __init__(self, json_path: str, image_folder: str, encoder):
        self.records, self.image_folder, self.encoder = load_llava_json(json_path), image_folder, encoder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = Image.open(os.path.join(self.image_folder, record["image"])).convert("RGB")
        example = self.encoder.encode(record["conversations"], [image])
        if example is None:
            raise ValueError(f"record {record['id']} does not fit --max_length")
        question = first_question(record["conversations"])
        # lane/index/bad: the collator's stream positions, which a map-style dataset does not have
        return {**example, "question": question, "category": record.get("category"), "lane": 0, "index": index, "bad": 0}


def make_loader(kind: str, sources: dict, collator, workers: int, batch: int, batches: int, seed: int) -> DataLoader:
    """A fresh loader; ``seed`` differs per round, so neither loader times the same samples every round."""
    if kind == "stream":
        stream = ShardStream(sources["urls"], sources["encoder"], 0, 1, workers, seed, sources["shuffle_buffer"],
                             micro_batch=batch, sizes=sources["sizes"])  # sizes counted once, as training does
        return DataLoader(stream, batch_size=batch, num_workers=workers, collate_fn=collator,
                          prefetch_factor=PREFETCH_FACTOR)
    generator = torch.Generator().manual_seed(seed)
    # Never ends inside the timed region or its prefetch (as training's epoch of 665K samples does not):
    # a sampler that ran out right at the last timed batch would leave the tail's CPU to the last
    # batches alone, while the endless stream's workers still prefetch (4 workers on 2 cores: 0.925 -> 1.00,
    # medians of 14 paired rounds each)
    needed = (batches + PREFETCH_FACTOR * workers) * batch
    sampler = RandomSampler(sources["dataset"], num_samples=max(needed, len(sources["dataset"])), generator=generator)
    return DataLoader(sources["dataset"], batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collator,
                      prefetch_factor=PREFETCH_FACTOR)


class CpuStamped:
    """The collator, plus which worker made the batch and its CPU seconds when done: the CPU between two
    of a worker's batches is exactly what the later one cost (no work in flight counted or missed)."""

    def __init__(self, collator: Collator):
        self.collator = collator

    def __call__(self, samples: list[dict]):
        return (*self.collator(samples), (os.getpid(), time.process_time()))


def measure(loader: DataLoader, warmup: int, batches: int) -> dict:
    """Samples/s over ``batches`` batches after ``warmup`` untimed ones, the workers' CPU ms per sample
    (steady on a busy machine, where wall time is not) and the wait for the first batch."""
    start = time.perf_counter()
    iterator, samples, stamps = iter(loader), 0, {}
    for index in range(warmup + batches):
        batch, _, (worker, cpu) = next(iterator)
        if index == 0:
            first = time.perf_counter() - start
        if index == warmup - 1:
            timed_from = time.perf_counter()
        if index >= warmup:
            samples += len(batch.input_ids)
            stamps.setdefault(worker, []).append((cpu, len(batch.input_ids)))
    seconds = time.perf_counter() - timed_from
    del iterator  # shuts its workers down before the next loader starts its own
    cpu = sum(made[-1][0] - made[0][0] for made in stamps.values())
    made_samples = sum(size for made in stamps.values() for _, size in made[1:])  # each worker's first: its start
    return {"samples_per_s": samples / seconds, "cpu_ms_per_sample": 1000 * cpu / made_samples, "first_batch_s": first}


def run_rounds(args, data: dict, encoder, collator) -> dict[str, dict[int, list[dict]]]:
    results = {kind: {workers: [] for workers in args.workers} for kind in LOADERS}
    urls = expand_shards(os.path.join(data["shard_dir"], "*.tar"))
    sources = {"encoder": encoder, "urls": urls, "sizes": shard_sizes(urls), "shuffle_buffer": args.shuffle_buffer,
               "dataset": LazyLlavaDataset(data["json"], data["image_folder"], encoder)}
    turn = 0
    for round_index in range(args.rounds):
        for workers in args.workers:
            warmup = args.warmup * workers
            order = LOADERS if turn % 2 == 0 else LOADERS[::-1]  # who goes first alternates
            turn += 1
            for kind in order:
                seed = args.seed + round_index
                loader = make_loader(kind, sources, CpuStamped(collator), workers, args.batch, warmup + args.batches, seed)
                results[kind][workers].append(measure(loader, warmup, args.batches))
            row = "  ".join(f"{kind} {results[kind][workers][-1]['samples_per_s']:.1f}" for kind in LOADERS)
            print(f"round {round_index + 1}/{args.rounds}, {workers} worker(s): {row} samples/s", flush=True)
    return results


# --- the report --------------------------------------------------------------------------------


def summarise(results: dict[str, dict[int, list[dict]]], workers_list: list[int]) -> dict:
    rows = {}
    for workers in workers_list:
        runs = results["stream"][workers], results["map"][workers]
        paired = paired_ratios([s["samples_per_s"] for s in runs[0]], [m["samples_per_s"] for m in runs[1]])
        paired_cpu = paired_ratios([m["cpu_ms_per_sample"] for m in runs[1]], [s["cpu_ms_per_sample"] for s in runs[0]])
        row = {"ratio": statistics.median(paired), "ratio_min": min(paired), "ratio_max": max(paired),
               "cpu_ratio": statistics.median(paired_cpu)}  # both ratios > 1: the stream is better
        for kind, measured in zip(LOADERS, runs):
            for key in ("samples_per_s", "cpu_ms_per_sample", "first_batch_s"):
                row[f"{kind}_{key}"] = statistics.median(m[key] for m in measured)
            row[f"{kind}_samples"] = [m["samples_per_s"] for m in measured]  # one per round
            row[f"{kind}_cpu_samples"] = [m["cpu_ms_per_sample"] for m in measured]
        rows[str(workers)] = row
    return rows


def verdicts(rows: dict) -> dict:
    at = rows.get(str(TARGETS["at_workers"]))
    fast_enough = None if at is None else at["stream_samples_per_s"] >= TARGETS["stream_samples_per_s"]
    as_fast = all(row["ratio"] >= TARGETS["ratio"] for row in rows.values())
    as_cheap = all(row["cpu_ratio"] >= TARGETS["ratio"] for row in rows.values())  # the same, on CPU time
    return {"ratio_at_least_1": as_fast, "cpu_ratio_at_least_1": as_cheap, "stream_25_per_s_at_4_workers": fast_enough}
