"""find_sink_dims.py speed and memory benchmark: the statistics pass vs plain forward passes, one run.

What it measures (default: the embedded demo LLaVA and demo shards, CPU fp32, nothing downloaded):

* **time ratio**: the same pre-encoded batches of ``--num_images`` images through (a) the backbone
  model's own prefill forward (``backbone.model(**backbone.model_inputs(...), use_cache=False,
  logits_to_keep=1)`` under ``torch.inference_mode``: what ``SinkCapture.run`` calls) and (b) the
  same forwards with find_sink_dims's hooks filling its statistics. Rounds alternate
  the order of (a) and (b) so machine-load drift hits both alike; the ratio is median(b) /
  median(a); target <= 1.15. "spread" is the median absolute deviation of (a) in % of its median:
  a ratio whose distance from 1.00 is below it is noise. The same ratio on process CPU time is
  printed too: on a machine shared with other jobs it is less disturbed than wall time.
* **memory**: the whole streaming pass (shards read and decoded batch by batch, exactly as the
  tool does) for each of ``--memory_images`` counts, each in a fresh process: peak resident memory
  (GPU: peak allocated) above the loaded model. Target: it does not grow with the image count;
  the statistics themselves are layers x channels x bins (their size is printed).

Run (about 2 minutes at the defaults on a 2-core CPU)::

    python tools/bench_find_sink_dims.py
    python tools/bench_find_sink_dims.py --num_images 64 --batch_size 16 --repeats 7 \\
        --memory_images 64,1024 --json bench.json

``--threads`` (default 1) pins torch's CPU threads: OpenMP threads fighting over busy cores make
timings noisy. On CPU the allocator is pinned too (glibc ``mallopt``: large freed blocks stay in
the heap): by default glibc hands them back to the OS and page-faults them in again on the next
batch, a cost of tens of percent that lands on either variant by chance; ``--default_allocator``
measures without that. The script always exits 0 (a benchmark, not a test); ``--json`` writes
every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from sinktrain import demo  # noqa: E402
from sinktrain.allocator import keep_freed_memory  # noqa: E402
from sinktrain.bench.report import environment, write_report  # noqa: E402
from sinktrain.find_sinks.capture import SinkCapture, VSinkFlag  # noqa: E402
from sinktrain.find_sinks.collect import collect, empty_stats  # noqa: E402
from sinktrain.find_sinks.images import PromptEncoder, batched, shard_items  # noqa: E402
from sinktrain.find_sinks.probe import load_unprofiled  # noqa: E402
from sinktrain.find_sinks.tokens import delimiter_table  # noqa: E402

TARGET = 1.15
MIN_RATIO = 100.0  # the tool's default rule for the provisional V-sink flag


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the embedded demo LLaVA")
    parser.add_argument("--data", default=None, help="default: the demo shards")
    parser.add_argument("--num_images", type=int, default=64, help="images per timed pass")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (medians reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--memory_images", default="64,512", help="image counts of the memory runs ('' skips them)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--default_allocator", action="store_true", help="leave glibc's malloc settings alone (noisier)")
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")
    parser.add_argument("--memory_probe", type=int, default=None, help=argparse.SUPPRESS)  # internal: one memory run
    return parser.parse_args(argv)


def load(args):
    backbone = load_unprofiled(args.model or str(demo.ensure_demo_model()))
    backbone.model.to(args.device)
    return backbone


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- time ------------------------------------------------------------------------------------
def on_device(backbone, batch: tuple, device: str) -> tuple:
    """(input_ids, attention_mask, vision) on the device, image tensors in the model's dtype (as collect does)."""
    input_ids, attention_mask, vision = batch
    dtype = next(backbone.model.parameters()).dtype
    vision = {k: v.to(device, dtype if v.is_floating_point() else None) for k, v in vision.items()}
    return input_ids.to(device), attention_mask.to(device), vision


def encoded_batches(backbone, args) -> list[tuple]:
    items = shard_items(args.data or demo.demo_data_pattern(), args.num_images, rank=0, world_size=1)
    encode = PromptEncoder(backbone, backbone.default_template)
    return [on_device(backbone, encode(chunk), args.device) for chunk in batched(items, args.batch_size)]


def timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds): CPU time is less disturbed by other jobs on the machine."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


@torch.inference_mode()
def plain_forward(backbone, input_ids, attention_mask, vision) -> None:
    """The backbone model's own prefill forward with the inputs SinkCapture.run gives it."""
    backbone.model(**backbone.model_inputs(input_ids, attention_mask, vision), use_cache=False, logits_to_keep=1)


def plain_pass(backbone, batches) -> None:
    for batch in batches:
        plain_forward(backbone, *batch)


def stats_pass(backbone, batches, device, delimiters) -> None:
    stats = empty_stats(backbone, device)
    with SinkCapture(backbone, stats, VSinkFlag(MIN_RATIO), delimiters) as capture:
        for batch in batches:
            capture.run(*batch)


def time_ratio(backbone, args) -> dict:
    batches = encoded_batches(backbone, args)
    delimiters = delimiter_table(backbone.tokenizer, backbone.image_token_id)  # once per run, as collect does
    samples: dict[str, list[float]] = {"plain": [], "stats": []}
    cpu: dict[str, list[float]] = {"plain": [], "stats": []}
    variants = {"plain": lambda: plain_pass(backbone, batches), "stats": lambda: stats_pass(backbone, batches, args.device, delimiters)}
    for index in range(args.warmup + args.repeats):
        order = ("plain", "stats") if index % 2 == 0 else ("stats", "plain")
        for name in order:
            seconds, cpu_seconds = timed(variants[name], args.device)
            if index >= args.warmup:
                samples[name].append(seconds)
                cpu[name].append(cpu_seconds)
        print(f"  round {index + 1}/{args.warmup + args.repeats} done", flush=True)
    plain, stats = statistics.median(samples["plain"]), statistics.median(samples["stats"])
    spread = statistics.median(abs(v - plain) for v in samples["plain"]) / plain
    return {
        "images": sum(b[0].shape[0] for b in batches),
        "plain_ms": 1000 * plain,
        "stats_ms": 1000 * stats,
        "ratio": stats / plain,
        "paired_median_ratio": statistics.median(s / p for s, p in zip(samples["stats"], samples["plain"])),
        "plain_spread_pct": 100 * spread,
        "cpu_paired_median_ratio": statistics.median(s / p for s, p in zip(cpu["stats"], cpu["plain"])),
        "target": TARGET,
        "pass": stats / plain <= TARGET,
        "plain_samples_ms": [1000 * v for v in samples["plain"]],
        "stats_samples_ms": [1000 * v for v in samples["stats"]],
    }


# -- memory ----------------------------------------------------------------------------------
def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Samples resident memory every few ms in a thread; the peak is what a pass needs at most."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s, self.peak, self._stop = interval_s, resident_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def memory_probe(args) -> dict:
    """One full streaming pass over ``args.memory_probe`` images in this (fresh) process."""
    backbone = load(args)
    items = lambda n: shard_items(args.data or demo.demo_data_pattern(), n, rank=0, world_size=1)  # noqa: E731
    template, vflag = backbone.default_template, VSinkFlag(MIN_RATIO)
    warm = next(iter(batched(items(args.batch_size), args.batch_size)))  # the model's own working memory first
    plain_forward(backbone, *on_device(backbone, PromptEncoder(backbone, template)(warm), args.device))
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    baseline = resident_bytes()
    with PeakSampler() as sampler:
        stats = collect(backbone, items(args.memory_probe), vflag, args.batch_size, template, args.device)
    gpu = torch.cuda.max_memory_allocated() - before if args.device.startswith("cuda") else None
    return {
        "images": int(stats.images),
        "peak_rss_above_model_mb": (sampler.peak - baseline) / 2**20,
        "peak_gpu_above_model_mb": gpu / 2**20 if gpu is not None else None,
        "stats_mb": stats.nbytes() / 2**20,
    }


def memory_runs(args) -> list[dict]:
    runs = []
    for count in [int(c) for c in args.memory_images.split(",") if c.strip()]:
        flags = ["--memory_probe", str(count), "--batch_size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device, "--default_allocator"]
        flags += ["--model", args.model] if args.model else []
        flags += ["--data", args.data] if args.data else []
        done = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  memory run: {runs[-1]['images']} images -> peak {runs[-1]['peak_rss_above_model_mb']:.1f} MB above the model", flush=True)
    return runs


# -- report ----------------------------------------------------------------------------------
def shape_text(backbone, args) -> str:
    stats = empty_stats(backbone, "cpu")
    vit, llm = stats.vit.hist.shape, stats.llm_all.hist.shape
    items = shard_items(args.data or demo.demo_data_pattern(), 1, rank=0, world_size=1)
    input_ids, _, _ = PromptEncoder(backbone, backbone.default_template)(list(items))
    visual = int((input_ids == backbone.image_token_id).sum())
    return (
        f"statistics: ViT {vit[0]} layers x {vit[1]} channels, LLM {llm[0]} layers x {llm[1]} channels (counted twice: "
        f"every token, visual tokens), x {vit[2]} bins = {stats.nbytes() / 2**20:.1f} MB (LLM hidden {backbone.llm_width}, "
        f"{visual} visual tokens in the first image, prompt {input_ids.shape[1]} tokens)"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.pinned_allocator = False if args.default_allocator or args.device.startswith("cuda") else keep_freed_memory()
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args)))
        return 0
    load_before = os.getloadavg()
    backbone = load(args)
    print(shape_text(backbone, args))
    allocator = "pinned" if args.pinned_allocator else "default"
    print(f"{args.num_images} images, batch {args.batch_size}, {args.warmup} warmup + {args.repeats} rounds, {args.device}, "
          f"{args.threads} threads, {allocator} allocator, torch {torch.__version__}, {os.cpu_count()} CPUs", flush=True)
    timing = time_ratio(backbone, args)
    memory = memory_runs(args)
    print()
    verdict = "PASS" if timing["pass"] else "FAIL"
    if abs(timing["ratio"] - 1) < timing["plain_spread_pct"] / 100:
        verdict += " (within noise)"
    print(f"time: plain {timing['plain_ms']:.0f} ms, with statistics {timing['stats_ms']:.0f} ms over {timing['images']} images: "
          f"ratio {timing['ratio']:.3f} (paired median {timing['paired_median_ratio']:.3f}, spread {timing['plain_spread_pct']:.1f}%, "
          f"CPU-time paired median {timing['cpu_paired_median_ratio']:.3f}), "
          f"target <= {TARGET}: {verdict}")
    for run in memory:
        print(f"memory: {run['images']:>5} images: peak {run['peak_rss_above_model_mb']:.1f} MB above the model "
              f"(statistics {run['stats_mb']:.1f} MB)")
    growth = memory[-1]["peak_rss_above_model_mb"] - memory[0]["peak_rss_above_model_mb"] if len(memory) > 1 else None
    if growth is not None:
        print(f"memory growth from {memory[0]['images']} to {memory[-1]['images']} images: {growth:+.1f} MB")
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        report = {
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "memory_probe")},
            "environment": environment(load_before, load_after),
            "time_ratio": timing["ratio"],
            "timing": timing,
            "memory": memory,
            "memory_growth_mb": growth,
        }
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
