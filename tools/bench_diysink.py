"""DIYSink selection latency benchmark: ReW and CoT routing against the plain DualMLP model, LLaVA or Qwen2-VL.

What it measures (CPU, fp32, random weights from a fixed seed, nothing downloaded), each on a
model with ``attach_dual_mlp(sink_first=True)``, against the same model generating as is:

* **ReW**: ``ReWeighting.set_questions`` on the batch's questions (the frozen sentence encoder,
  then the MLP: per-sample weights on the V-sink and other patch slots), then a greedy
  ``generate`` of ``--new_tokens`` (32) tokens with the KV cache, the weights scaling the slots
  at the prefill. The ReW copy holds the plain one's weights; its MLP's last layer gets small
  random weights (the neutral init scales by exactly 1). The sentence encoder has the shape of
  the real default, sentence-transformers/all-MiniLM-L6-v2 (BertModel, 384 wide, 6 layers, 12
  heads, MLP 1536, vocab 30522, 512 positions) with random weights and the demo encoder's
  WordPiece tokenizer; ``--sentence_encoder DIR_OR_HUB_ID`` loads a real one instead. Target:
  (selection + generate) / plain generate <= 1.02 (the DIYSink paper: ReW adds ~0.01 s per sample).
* **CoT routing**: ``CotRouter.decide`` (the model answers two routing questions, each a greedy
  generation of up to ``--cot_tokens`` (5) tokens on the image and a prompt), then the same
  generate with the chosen visual slots (``router.selecting``). Random-weight models answer
  random tokens, so every decision is "unmatched" and keeps both token sets: the routing cost
  is the two extra generations, which is what is timed. No target: the ratio is reported (the
  paper: ~1.6 s per sample, several times a short answer).

"generate" rows time the generate call alone (the method's weighted / routed generation);
"select + generate" / "route + generate" rows add the selection, the added latency per sample
the paper reports. The selection's own median time per sample is printed below the table.
Models and inputs are tools/bench_overhead.py's (``--family``, ``--hidden``, ``--layers``, ...:
see there); ``--threads`` and the pinned allocator work as there.

Run (3-4 minutes per family at the default size on a 2-core CPU; ``--threads 1`` on a machine
busy with other jobs, where two threads wait for each other and paired rounds swing by 10-20 %)::

    python tools/bench_diysink.py                       # --family llava
    python tools/bench_diysink.py --family qwen2_vl --threads 1 --json diysink-qwen.json

How to read it: as tools/bench_overhead.py's table ("stock" is the plain DualMLP model). ``--json
FILE`` writes all numbers, raw samples included; ``rew_ratio`` and ``cot_ratio`` at the top level
are the "select + generate" and "route + generate" ratios, ``selection_ms_per_sample`` the
selection alone, ``routing`` the decisions (routes, unmatched, per decide call).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sinktrain.bench.cli import add_model_flags, add_run_flags, start  # noqa: E402
from sinktrain.bench.diysink_latency import FAMILIES, run  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_flags(parser, FAMILIES)
    parser.add_argument("--new_tokens", type=int, default=32, help="tokens per timed generate (at least 2)")
    parser.add_argument("--cot_tokens", type=int, default=5, help="max new tokens of each CoT routing answer")
    parser.add_argument("--sentence_encoder", default=None, help="ReW's encoder, a directory or hub id (default: random weights, all-MiniLM-L6-v2's shape)")
    add_run_flags(parser)
    args = parser.parse_args(argv)
    if args.text_tokens < 1 or args.visual_tokens < 1 or args.batch < 1 or args.cot_tokens < 1 or args.repeats < 1:
        parser.error("--text_tokens, --visual_tokens, --batch, --cot_tokens and --repeats must be positive")
    if args.new_tokens < 2:
        parser.error("--new_tokens must be at least 2 (the first token, then cached decoding steps)")
    FAMILIES[args.family].resolve_args(args, parser.error)
    return args


def main(argv=None) -> int:
    return run(start(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
