"""LSG overhead benchmark: gated vs stock LLaVA, training step and generation, in one run.

What it measures (CPU, fp32, random weights from a fixed seed, nothing downloaded):

* **train step**: forward + backward of the next-token loss through ``Backbone.forward`` on a
  frozen LLaVA. Both variants train the projector (so the stock step has a graph to backward
  through, down to the connector); the gated variant also trains ``LayerGating`` gates on
  ``--gate_layers`` (default 1,2,3,5,6). Target: gated / stock <= 1.05.
* **prefill** and **decode / token**: one greedy ``generate`` of 1 + ``--new_tokens`` (32) tokens
  with the KV cache, ``min_new_tokens = max_new_tokens`` so both variants produce the same
  lengths. A stopping criterion that never stops stamps the clock each time a token is picked:
  prefill = start to the first token (``LayerGating.prepare``, vision tower, projector, the whole
  prompt through the LLM, first argmax); decode / token = the median of the 32 cached steps
  after it (a median, so a step that lost its CPU to another process does not move it).
  Targets: gated / stock <= 1.02 for both.

The model is a ``LlavaForConditionalGeneration`` built in memory: LLaMA-style LLM (``--hidden``
1024, ``--layers`` 8, ``--heads`` 16, intermediate 2.75 x hidden, ``--vocab`` 32000) and a small
CLIP ViT (hidden 256, 2 layers, patch 14, image side chosen to give ``--visual_tokens`` = 576
tokens, i.e. 336 px). The stock model is a deep copy of it, so both variants hold the same
weights and get the same inputs; the gates get small random output weights (not the neutral
init), as after training. The sink profile reads ViT channel 0 with tau set so ~2 patches per
image are V-sinks. ``torch`` threads are left at their default unless ``--threads N``.

Run (a few minutes at the default size on an idle 2-core CPU, much longer on a busy one)::

    python tools/bench_overhead.py
    python tools/bench_overhead.py --hidden 1024 --layers 8 --visual_tokens 576 \\
        --text_tokens 64 --batch 2 --repeats 10 --json overhead.json

How to read it: ``--warmup`` untimed rounds, then ``--repeats`` timed rounds; in every round the
stock and gated variants run each measurement back to back, who goes first alternating, so both
see the same machine load. "stock ms" / "gated ms" are medians over the rounds. "ratio" is the
median over the rounds of gated / stock from the same round (robust when the machine's load
changes between rounds), "+-" its median absolute deviation: a ratio closer to 1 than that is
noise, not overhead. "best" is fastest gated / fastest stock, "cpu" the ratio of process CPU time
(all threads; on a machine shared with other jobs it is less disturbed than wall time). PASS /
FAIL compare "ratio" with the target; the script always exits 0 (it is a benchmark, not a test).
``--json FILE`` writes all numbers, raw samples included; ``train_ratio``, ``prefill_ratio`` and
``decode_ratio`` at the top level are the table's ratios.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)

from sinktrain.backbones.base import Batch  # noqa: E402
from sinktrain.bench_report import environment, write_report  # noqa: E402
from sinktrain.backbones.llava import LlavaBackbone  # noqa: E402
from sinktrain.backbones.profiles import SinkProfile  # noqa: E402
from sinktrain.demo.llava import train_tokenizer  # noqa: E402
from sinktrain.lsg.gating import LayerGating  # noqa: E402

SEED = 0
PATCH = 14
VIT_HIDDEN, VIT_LAYERS, VIT_HEADS = 256, 2, 4
SINK_DIM = 0  # the profile's ViT channel; tau is chosen from the benchmark images
SINKS_PER_IMAGE = 2
TARGETS = {"train_step": 1.05, "prefill": 1.02, "decode_per_token": 1.02}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024, help="LLM hidden size")
    parser.add_argument("--layers", type=int, default=8, help="LLM decoder layers")
    parser.add_argument("--heads", type=int, default=16, help="LLM attention heads (= KV heads)")
    parser.add_argument("--intermediate", type=int, default=None, help="LLM MLP size (default 2.75 x hidden: 2816 at 1024)")
    parser.add_argument("--vocab", type=int, default=32000, help="LLM vocabulary (at least the tokenizer's)")
    parser.add_argument("--visual_tokens", type=int, default=576, help="visual tokens per image (a square: 576 = 24 x 24 -> 336 px)")
    parser.add_argument("--text_tokens", type=int, default=64, help="text tokens per sample (a quarter before the image)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--gate_layers", default="1,2,3,5,6", help="gated layers; those beyond --layers are dropped")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--new_tokens", type=int, default=32, help="decode tokens timed per generate")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default 0: leave torch's default)")
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")
    args = parser.parse_args(argv)
    side = math.isqrt(args.visual_tokens)
    if side * side != args.visual_tokens:
        parser.error(f"--visual_tokens {args.visual_tokens} is not a square (576 = 24 x 24)")
    if args.text_tokens < 4:
        parser.error("--text_tokens must be at least 4")
    args.image_size = side * PATCH
    args.intermediate = args.intermediate or int(round(2.75 * args.hidden))
    requested = [int(part) for part in args.gate_layers.split(",") if part.strip()]
    args.dropped_gate_layers = [layer for layer in requested if layer >= args.layers]
    args.gate_layers = [layer for layer in requested if layer < args.layers]
    if not args.gate_layers:
        parser.error(f"none of --gate_layers {requested} exists in a {args.layers}-layer LLM")
    return args


# -- model -----------------------------------------------------------------------------------
def build_config(args, tokenizer) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=VIT_HIDDEN, intermediate_size=4 * VIT_HIDDEN, num_hidden_layers=VIT_LAYERS,
        num_attention_heads=VIT_HEADS, image_size=args.image_size, patch_size=PATCH, hidden_act="quick_gelu",
        projection_dim=VIT_HIDDEN,
    )
    text = LlamaConfig(
        hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.heads, vocab_size=max(args.vocab, len(tokenizer)),
        max_position_embeddings=max(2048, 2 * (args.visual_tokens + args.text_tokens + args.new_tokens)),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )


def build_processor(args, tokenizer) -> LlavaProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": args.image_size}, crop_size={"height": args.image_size, "width": args.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )


@torch.no_grad()
def pick_tau(model, pixel_values: torch.Tensor) -> float:
    """A threshold on ViT channel SINK_DIM that makes ~SINKS_PER_IMAGE patches per image V-sinks."""
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
    values = hidden[..., SINK_DIM].abs().flatten().sort(descending=True).values
    return float(values[min(SINKS_PER_IMAGE * pixel_values.shape[0], values.numel()) - 1])


def make_inputs(args, tokenizer, image_token_id: int, generator: torch.Generator):
    """One batch for the train step and the matching generate inputs (same ids, same pixels)."""
    before = args.text_tokens // 4
    after = args.text_tokens - before
    length = before + args.visual_tokens + after
    specials = {image_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    ordinary = torch.tensor([i for i in range(3, len(tokenizer)) if i not in specials])
    text = ordinary[torch.randint(len(ordinary), (args.batch, args.text_tokens), generator=generator)]
    input_ids = torch.cat(
        [text[:, :before], torch.full((args.batch, args.visual_tokens), image_token_id), text[:, before:]], dim=1
    )
    input_ids[:, 0] = tokenizer.bos_token_id
    answer_start = length - max(1, after // 2)  # the last half of the text after the image is the answer
    labels = torch.full_like(input_ids, -100)
    labels[:, answer_start:] = input_ids[:, answer_start:]
    pixel_values = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=generator)
    batch = Batch(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        labels=labels,
        pixel_values=pixel_values,
        has_image=torch.ones(args.batch, dtype=torch.bool),
        last_prompt_index=torch.full((args.batch,), answer_start - 1),
    )
    prompt = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}
    return batch, prompt


def count_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def freeze_but_projector(backbone) -> list[torch.nn.Parameter]:
    backbone.model.eval()
    backbone.model.requires_grad_(False)
    backbone.connector.requires_grad_(True)
    return list(backbone.connector.parameters())


# -- timing ----------------------------------------------------------------------------------
MEASURES = ("train_step", "prefill", "decode_per_token", "generate")


class Clock:
    """Wall and process CPU time at once (CPU time ignores time spent descheduled)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def since(self, other: "Clock") -> tuple[float, float]:
        return self.wall - other.wall, self.cpu - other.cpu


class Stamps(StoppingCriteria):
    """Never stops generation; records a Clock each time a token has been picked."""

    def __init__(self):
        self.clocks: list[Clock] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.clocks.append(Clock())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Variant:
    def __init__(self, name: str, backbone, gating: LayerGating | None, trainable: list):
        self.name, self.backbone, self.gating = name, backbone, gating
        self.trainable = trainable
        self.wall: dict[str, list[float]] = {measure: [] for measure in MEASURES}
        self.cpu: dict[str, list[float]] = {measure: [] for measure in MEASURES}

    def record(self, measure: str, times: tuple[float, float]) -> None:
        self.wall[measure].append(times[0])
        self.cpu[measure].append(times[1])

    def train_step(self, batch: Batch, record: bool) -> None:
        for parameter in self.trainable:
            parameter.grad = None
        gc.collect()
        start = Clock()
        self.backbone.forward(batch).loss.backward()  # the gated backbone's batch hook prepares LSG
        end = Clock()
        if record:
            self.record("train_step", end.since(start))

    def generate(self, prompt: dict, new_tokens: int, record: bool) -> None:
        """One greedy generate of 1 + new_tokens tokens: prefill (up to the first token picked),
        then new_tokens KV-cached decode steps, timed from the per-token stamps."""
        stamps = Stamps()
        gc.collect()
        start = Clock()
        if self.gating is not None:
            self.gating.prepare(prompt["input_ids"])
        out = self.backbone.model.generate(
            **prompt, max_new_tokens=1 + new_tokens, min_new_tokens=1 + new_tokens, do_sample=False,
            pad_token_id=self.backbone.tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([stamps]),
        )
        end = Clock()
        assert out.shape[1] == prompt["input_ids"].shape[1] + 1 + new_tokens, out.shape
        clocks = stamps.clocks[: new_tokens + 1]
        steps = [later.since(earlier) for earlier, later in zip(clocks, clocks[1:])]
        if record:
            self.record("prefill", clocks[0].since(start))
            # median step: a step that lost its CPU to another process does not move it
            self.record("decode_per_token", tuple(statistics.median(times) for times in zip(*steps)))
            self.record("generate", end.since(start))


def median_abs_deviation(values: list[float]) -> float:
    middle = statistics.median(values)
    return statistics.median(abs(v - middle) for v in values)


def paired_ratios(ours: list[float], theirs: list[float]) -> list[float]:
    return [o / t for o, t in zip(ours, theirs) if t > 0] or [float("nan")]


def summarise(stock: Variant, gated: Variant) -> dict:
    rows = {}
    for measure in MEASURES:
        ours, theirs = gated.wall[measure], stock.wall[measure]
        paired = paired_ratios(ours, theirs)
        ratio = statistics.median(paired)
        rows[measure] = {
            "stock_ms": 1000 * statistics.median(theirs),
            "gated_ms": 1000 * statistics.median(ours),
            "ratio": ratio,  # median over rounds of gated / stock measured back to back
            "ratio_spread_pct": 100 * median_abs_deviation(paired),
            "ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
            "best_ratio": min(ours) / min(theirs),
            "cpu_time_ratio": statistics.median(paired_ratios(gated.cpu[measure], stock.cpu[measure])),
            "target": TARGETS.get(measure),
            "pass": ratio <= TARGETS[measure] if measure in TARGETS else None,
            "stock_samples_ms": [1000 * v for v in theirs],
            "gated_samples_ms": [1000 * v for v in ours],
            "stock_cpu_samples_ms": [1000 * v for v in stock.cpu[measure]],
            "gated_cpu_samples_ms": [1000 * v for v in gated.cpu[measure]],
        }
    return rows


def print_table(args, rows: dict) -> None:
    labels = {
        "train_step": "train step (fwd+bwd)",
        "prefill": "prefill (to 1st token)",
        "decode_per_token": "decode / token",
        "generate": f"generate {1 + args.new_tokens} (total)",
    }
    header = (
        f"{'measure':<24}{'stock ms':>10}{'gated ms':>10}{'ratio':>8}{'+-':>7}{'best':>7}{'cpu':>7}{'target':>8}"
        "  verdict"
    )
    print(header)
    print("-" * len(header))
    for measure, row in rows.items():
        target = f"<={row['target']:.2f}" if row["target"] else ""
        if row["pass"] is None:
            verdict = "(info)"
        else:
            verdict = "PASS" if row["pass"] else "FAIL"
            if abs(row["ratio"] - 1) < row["ratio_spread_pct"] / 100:
                verdict += " (within noise)"
        print(
            f"{labels[measure]:<24}{row['stock_ms']:>10.1f}{row['gated_ms']:>10.1f}{row['ratio']:>8.3f}"
            f"{row['ratio_spread_pct'] / 100:>7.3f}{row['best_ratio']:>7.3f}{row['cpu_time_ratio']:>7.3f}{target:>8}  {verdict}"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sinktrain-bench-") as workdir:
        tokenizer = train_tokenizer(Path(workdir))
        torch.manual_seed(SEED)
        config = build_config(args, tokenizer)
        model = LlavaForConditionalGeneration._from_config(config, attn_implementation=args.attn).eval()
        processor = build_processor(args, tokenizer)
        generator = torch.Generator().manual_seed(SEED)
        batch, prompt = make_inputs(args, tokenizer, config.image_token_id, generator)
        tau = pick_tau(model, batch.pixel_values)
        profile = SinkProfile(
            name="bench", vision_tower="bench-vit", vit_dims=[SINK_DIM], vit_layer=-2, criterion="dim_threshold",
            tau_v=tau, hidden_size_vit=VIT_HIDDEN, hidden_size_llm=args.hidden,
        )
        stock_model = copy.deepcopy(model)  # before any LSG hook exists, so the copy has none
        stock_backbone = LlavaBackbone(stock_model, processor, profile)
        gated_backbone = LlavaBackbone(model, processor, profile)
        assert stock_backbone.num_image_tokens == args.visual_tokens, stock_backbone.num_image_tokens
        stock = Variant("stock", stock_backbone, None, freeze_but_projector(stock_backbone))
        gated_trainable = freeze_but_projector(gated_backbone)
        gating = LayerGating(gated_backbone, args.gate_layers, args.groups)
        with torch.no_grad():
            for gate in gating.gates.values():  # as after training: scales differ from 1
                torch.nn.init.normal_(gate.out.weight, std=0.1, generator=generator)
        gates = [p for p in gating.gates.parameters()]
        assert count_hooks(model) - count_hooks(stock_model) == len(gating.handles), "LSG hooks leaked into the stock copy"
        assert all(p.requires_grad for p in gates)
        gated = Variant("gated", gated_backbone, gating, gated_trainable + gates)

        params = sum(p.numel() for p in stock_model.parameters())
        print(
            f"LLaVA {params / 1e6:.0f}M params: LLM d={args.hidden} x {args.layers} layers, {args.heads} heads, "
            f"MLP {args.intermediate}, vocab {config.text_config.vocab_size}; ViT {VIT_HIDDEN} x {VIT_LAYERS}, "
            f"{args.image_size}px -> {args.visual_tokens} visual tokens"
        )
        dropped = f" ({args.dropped_gate_layers} dropped: beyond {args.layers} layers)" if args.dropped_gate_layers else ""
        print(
            f"batch {args.batch} x {batch.input_ids.shape[1]} tokens ({args.text_tokens} text), gates on layers "
            f"{args.gate_layers}{dropped}, {args.groups} groups, {sum(p.numel() for p in gates)} gate params; "
            f"attn {args.attn}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
        )
        print(f"{args.warmup} warmup + {args.repeats} timed rounds, stock and gated alternating ...", flush=True)

        rounds = args.warmup + args.repeats
        for index in range(rounds):
            record = index >= args.warmup
            # stock and gated back to back for each measurement, who goes first alternating
            pair = (stock, gated) if index % 2 == 0 else (gated, stock)
            for variant in pair:
                variant.train_step(batch, record)
            for variant in reversed(pair):
                variant.generate(prompt, args.new_tokens, record)
            print(f"  round {index + 1}/{rounds} done", flush=True)
        sinks = int(gating.prepared.v_sinks.sum()) if gating.prepared.v_sinks is not None else 0

    rows = summarise(stock, gated)
    print()
    print_table(args, rows)
    load_after = os.getloadavg()
    print(
        "\nms: medians over the rounds. ratio: median over the rounds of gated / stock, run back to back; +-: its median "
        "absolute deviation\n(a ratio closer to 1 than that is noise). best: fastest gated / fastest stock. cpu: ratio "
        f"of process CPU time (all threads). V-sinks in the batch: {sinks}; "
        f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs."
    )
    if args.json:
        report = {
            "config": {key: value for key, value in vars(args).items() if key != "json"},
            "environment": environment(load_before, load_after),
            "parameters": params,
            "v_sinks": sinks,
            "train_ratio": rows["train_step"]["ratio"],
            "prefill_ratio": rows["prefill"]["ratio"],
            "decode_ratio": rows["decode_per_token"]["ratio"],
            "targets": TARGETS,
            "measures": rows,
        }
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
