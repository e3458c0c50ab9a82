"""Data throughput: sinktrain's shard stream against a LLaVA-style map-style loader, same images, same encoder.

Data: sinktrain.bench.photo_scenes (N photo-like JPEG scenes with LLaVA conversations, as a
LLaVA JSON + image folder and as shards).

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
samples / seconds, and the workers' CPU ms and page faults per sample (each worker's between its
first and last timed batch, stamped by the collator; steadier than wall time on a shared machine).
The stream reads a lane's raw samples a shuffle window at a time (sinktrain.data.order), so its tar
reading lands in a timed region only at window starts: ``--shuffle_buffer`` (64) is sized so that
every worker's timed batches hold whole windows (the reading is counted at its true share;
training's default, 1000, reads the same bytes in bursts a short region would miss). Rounds repeat
all worker counts, the loaders alternating who goes first, each round with its own seed (stream
order, sampler), so neither times one fixed subset of samples; medians over rounds are reported,
ratios pair the same round. The two do the same decode (~8 ms a sample) and differ in how they read
(a tar member or an image file, ~0.03 ms), so their ratio sits near 1.0 and a round's 10-30% scatter
hides the difference; ``interleaved_work`` narrows it down to 1-2%: both loaders' batches in turns
in one process.
"""

from __future__ import annotations

import copy
import os
import resource
import statistics
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler

import sinktrain.demo
from sinktrain.backbones.llava import SquareImageInputs
from sinktrain.bench.timing import paired_ratios
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.collate import Collator
from sinktrain.data.encode import first_question
from sinktrain.data.llava_json import load_llava_json
from sinktrain.data.shard_index import shard_sizes
from sinktrain.data.stream import ShardStream, expand_shards

LOADERS = ("stream", "map")
TARGETS = {"ratio": 1.0, "stream_samples_per_s": 25.0, "at_workers": 4}
PREFETCH_FACTOR = 2  # batches in flight per worker (DataLoader's default), both loaders
PATCH = 14  # CLIP ViT-L/14: LLaVA-1.5's slots per image are (crop / 14)^2
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


def make_stream(sources: dict, workers: int, batch: int, seed: int) -> ShardStream:
    return ShardStream(sources["urls"], sources["encoder"], 0, 1, workers, seed, sources["shuffle_buffer"],
                       micro_batch=batch, sizes=sources["sizes"])


def make_loader(kind: str, sources: dict, collator, workers: int, batch: int, batches: int, seed: int) -> DataLoader:
    """A fresh loader; ``seed`` differs per round, so neither loader times the same samples every round."""
    if kind == "stream":
        return DataLoader(make_stream(sources, workers, batch, seed), batch_size=batch, num_workers=workers,
                          collate_fn=collator, prefetch_factor=PREFETCH_FACTOR)
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
    """The collator, plus which worker made the batch, its CPU seconds and page faults when done: what a
    worker spent between two of its batches is exactly what the later one cost (nothing in flight
    counted or missed). Page faults show memory the worker's allocator handed back and touched again."""

    def __init__(self, collator: Collator):
        self.collator = collator

    def __call__(self, samples: list[dict]):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        return (*self.collator(samples), (os.getpid(), time.process_time(), faults))


def measure(loader: DataLoader, warmup: int, batches: int) -> dict:
    """Samples/s over ``batches`` batches after ``warmup`` untimed ones, the workers' CPU ms and page
    faults per sample (steady on a busy machine, where wall time is not) and the wait for the first batch."""
    start = time.perf_counter()
    iterator, samples, stamps = iter(loader), 0, {}
    for index in range(warmup + batches):
        batch, _, (worker, cpu, faults) = next(iterator)
        if index == 0:
            first = time.perf_counter() - start
        if index == warmup - 1:
            timed_from = time.perf_counter()
        if index >= warmup:
            samples += len(batch.input_ids)
            stamps.setdefault(worker, []).append((cpu, faults, len(batch.input_ids)))
    seconds = time.perf_counter() - timed_from
    del iterator  # shuts its workers down before the next loader starts its own
    cpu, faults = (sum(made[-1][i] - made[0][i] for made in stamps.values()) for i in (0, 1))
    made_samples = sum(size for made in stamps.values() for *_, size in made[1:])  # each worker's first: its start
    return {"samples_per_s": samples / seconds, "cpu_ms_per_sample": 1000 * cpu / made_samples,
            "page_faults_per_sample": faults / made_samples, "first_batch_s": first}


def loader_sources(args, data: dict, encoder) -> dict:
    """What both loaders read from: the shards (sizes counted once, as training does) and the LLaVA JSON + folder."""
    urls = expand_shards(os.path.join(data["shard_dir"], "*.tar"))
    return {"encoder": encoder, "urls": urls, "sizes": shard_sizes(urls), "shuffle_buffer": args.shuffle_buffer,
            "dataset": LazyLlavaDataset(data["json"], data["image_folder"], encoder)}


def run_rounds(args, sources: dict, collator) -> dict[str, dict[int, list[dict]]]:
    results = {kind: {workers: [] for workers in args.workers} for kind in LOADERS}
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


def interleaved_work(sources: dict, collator, batch: int, batches: int, seed: int) -> dict:
    """Both loaders' work per sample in this one process, batch by batch in turns (who goes first
    alternates): machine drift hits both alike, so this resolves differences of 1-2% (from run to run
    it moves that much) that the DataLoader rounds, scattering 10-30%, cannot. CPU ms per sample, and
    map / stream paired per turn."""
    stream = iter(make_stream(sources, 0, batch, seed))
    dataset = sources["dataset"]
    indices = iter(RandomSampler(dataset, num_samples=(batches + 1) * batch,
                                 generator=torch.Generator().manual_seed(seed)))
    make = {"stream": lambda: [next(stream) for _ in range(batch)],
            "map": lambda: [dataset[next(indices)] for _ in range(batch)]}
    costs = {kind: [] for kind in LOADERS}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        for turn in range(batches + 1):  # turn 0 warms both up (the stream's first window, the first images)
            for kind in LOADERS if turn % 2 else LOADERS[::-1]:
                start = time.process_time()
                collator(make[kind]())
                if turn:
                    costs[kind].append(1000 * (time.process_time() - start) / batch)
    finally:
        torch.set_num_threads(threads)
    ratio = statistics.median(paired_ratios(costs["map"], costs["stream"]))
    return {"batches": batches, "ratio": ratio, **{f"{kind}_cpu_ms_per_sample": statistics.median(costs[kind])
                                                   for kind in LOADERS}}


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
            for key in ("samples_per_s", "cpu_ms_per_sample", "page_faults_per_sample", "first_batch_s"):
                row[f"{kind}_{key}"] = statistics.median(m[key] for m in measured)
            row[f"{kind}_samples"] = [m["samples_per_s"] for m in measured]  # one per round
            row[f"{kind}_cpu_samples"] = [m["cpu_ms_per_sample"] for m in measured]
        rows[str(workers)] = row
    return rows


def verdicts(rows: dict, work: dict) -> dict:
    at = rows.get(str(TARGETS["at_workers"]))
    fast_enough = None if at is None else at["stream_samples_per_s"] >= TARGETS["stream_samples_per_s"]
    as_fast = all(row["ratio"] >= TARGETS["ratio"] for row in rows.values())
    as_cheap = all(row["cpu_ratio"] >= TARGETS["ratio"] for row in rows.values())  # the same, on CPU time
    return {"ratio_at_least_1": as_fast, "cpu_ratio_at_least_1": as_cheap,
            "work_ratio_at_least_1": work["ratio"] >= TARGETS["ratio"], "stream_25_per_s_at_4_workers": fast_enough}
