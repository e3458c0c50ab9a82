"""Evaluation: greedy generation on eval sets, scoring, tables, and the flags the tools share.

* ``generate``: prompts in the backbone's chat format, batched greedy ``generate()``;
* ``results``: predictions and exact-match accuracy per task category, r_sink statistics;
* ``table``: the plain-text tables tools/evaluate.py prints;
* ``setup``: model / eval-set / generation flags and loading them (evaluate, oracle, stacking).
"""

from sinktrain.eval.generate import evaluate
from sinktrain.eval.results import Results, normalise

__all__ = ["Results", "evaluate", "normalise"]
