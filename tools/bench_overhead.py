"""Method overhead benchmark: LSG and DualMLP against the stock model, LLaVA or Qwen2-VL, in one run.

What it measures (CPU, fp32, random weights from a fixed seed, nothing downloaded), each method
variant against the bare transformers model (no sinktrain hook: the methods' cost includes
sinktrain's slot tracking):

* **LSG train step**: forward + backward of the next-token loss through ``Backbone.forward`` on
  a frozen model. Both variants train the connector (so the stock step has a graph to backward
  through, down to the connector); LSG also trains ``LayerGating`` gates on ``--gate_layers``
  (default 1,2,3,5,6). Target: LSG / stock <= 1.05.
* **prefill** and **decode / token** (LSG): one greedy ``generate`` of 1 + ``--new_tokens`` (32)
  tokens with the KV cache, ``min_new_tokens = max_new_tokens`` so both produce the same lengths.
  A stopping criterion that never stops stamps the clock each time a token is picked: prefill =
  start to the first token (vision tower, connector, the whole prompt through the LLM, first
  argmax); decode / token = the median of the cached steps after it (a median, so a step that
  lost its CPU to another process does not move it). Targets: LSG / stock <= 1.02 for both.
* **DualMLP train step**: ``attach_dual_mlp(sink_first=True)`` (V-sink slots first, routed
  through their own projector) against the stock connector; both train the connector only, which
  keeps the run short, or with ``--dual_mlp_llm`` the connector and the LLM (DIYSink stage 2: all
  but the ViT). Target: DualMLP / stock <= 1.03.

Models (built in memory from configs with transformers' own classes; sinktrain/bench/llava.py
and qwen2_vl.py say more): ``--family llava``: ``LlavaForConditionalGeneration``, LLaMA-style
LLM (``--hidden`` 1024, ``--layers`` 8, 16 heads, MLP 2.75 x hidden, ``--vocab`` 32000) and a
small CLIP ViT (256 wide, 2 layers, patch 14) at 336 px -> ``--visual_tokens`` 576 slots.
``--family qwen2_vl``: ``Qwen2VLForConditionalGeneration``, Qwen2-7B's LLM shape scaled to
--hidden x --layers (head dim 128, GQA, MLP 5.29 x hidden, M-RoPE sections scaled to the head
dim, vocab --vocab too) and a small ViT (256 wide, 2 blocks, patch 14, 2x2 merger) on
dynamic-resolution images of about --visual_tokens slots each (aspect ratios 1, 4:3, 3:4, 16:9,
one per sample of the batch: 24 x 24 = 576, 27 x 21 = 567, ...). Inputs go through sinktrain's
data path (``backbone.encoder()`` / ``collator()``; the evaluation's left-padded prompts); each
sample (``--batch``, default 1) has about ``--text_tokens`` text tokens, chat template included.
The method copies hold the stock weights; the gates get small random output weights (as after
training, not the neutral init; during the first warmup round they are neutral and the LSG loss
must equal the stock loss). The sink profile reads ViT channel 0 with tau set so ~2 slots per
image are V-sinks. ``torch`` threads are left at their default unless ``--threads N`` (on a
machine busy with other jobs, ``--threads 1`` avoids threads waiting for each other, which
makes wall and CPU times swing several-fold). The allocator is pinned (glibc ``mallopt``: large
freed blocks stay in the heap): by default glibc returns them to the OS and page-faults them in
again in the next step, a cost of ~10% that lands on whichever variant runs after a step that
freed memory; ``--default_allocator`` measures without that.

Run (about 3 minutes per family at the default size on an idle 2-core CPU, longer on a busy one)::

    python tools/bench_overhead.py                      # --family llava
    python tools/bench_overhead.py --family qwen2_vl --json overhead-qwen.json
    python tools/bench_overhead.py --family qwen2_vl --batch 2 --repeats 10 --dual_mlp_llm --json overhead.json

How to read it: ``--warmup`` untimed rounds, then ``--repeats`` timed rounds; in every round each
measurement runs stock and method back to back, who goes first alternating, so both see the same
machine load. "stock ms" / "method ms" are medians over the rounds. "ratio" is the median over
the rounds of method / stock from the same round (robust when the machine's load changes between
rounds), "+-" its median absolute deviation: a ratio closer to 1 than that is noise, not
overhead. "best" is fastest method / fastest stock, "cpu" the paired ratio of process CPU time
(all threads; on a machine shared with other jobs it is less disturbed than wall time). PASS /
FAIL compare "ratio" with the target; the script exits 0 whatever they say (a benchmark, not a
test). ``--json FILE`` writes all numbers, raw samples included; ``train_ratio``,
``prefill_ratio``, ``decode_ratio`` and ``dual_mlp_train_ratio`` at the top level are the table's
ratios.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.bench.cli import add_model_flags, add_run_flags, start  # noqa: E402
from sinktrain.bench.overhead import FAMILIES, run  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_flags(parser, FAMILIES)
    parser.add_argument("--gate_layers", default="1,2,3,5,6", help="LSG gated layers; those beyond --layers are dropped")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--dual_mlp_llm", action="store_true", help="DualMLP step also trains the LLM (DIYSink stage 2; slower)")
    parser.add_argument("--new_tokens", type=int, default=32, help="decode tokens timed per generate")
    add_run_flags(parser, "untimed rounds first (the first checks neutral gates)")
    args = parser.parse_args(argv)
    if args.text_tokens < 1 or args.visual_tokens < 1 or args.batch < 1 or args.new_tokens < 1 or args.repeats < 1:
        parser.error("--text_tokens, --visual_tokens, --batch, --new_tokens and --repeats must be positive")
    FAMILIES[args.family].resolve_args(args, parser.error)
    requested = [int(part) for part in args.gate_layers.split(",") if part.strip()]
    args.dropped_gate_layers = [layer for layer in requested if layer >= args.layers]
    args.gate_layers = [layer for layer in requested if layer < args.layers]
    if not args.gate_layers:
        parser.error(f"none of --gate_layers {requested} exists in a {args.layers}-layer LLM")
    return args


def main(argv=None) -> int:
    return run(start(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
