"""The methods tools/evaluate.py compares (``--method``), each set up on a loaded backbone.

    method = build_method(backbone, "diysink_cot", diysink_checkpoint=..., cot_prompts=...)
    results = evaluate(backbone, samples, method=method)

* ``stock``: the model as loaded (with ``--gates``: LSG);
* ``sink_to_front``: training-free, each image's V-sinks first with their own positions;
* ``diysink``: the DualMLP model (``--diysink_checkpoint``; without one both projectors are the
  model's own, the starting point of ReW on the demo);
* ``diysink_rew``: DualMLP, each sample's two token sets scaled by its ReW weights (``--rew``);
* ``diysink_cot``: DualMLP, CoT routing picks sink-only, non-sink-only or both per sample;
* ``sink_only`` / ``non_sink_only``: the LLM sees only the V-sink (other) visual tokens, on the
  DualMLP model when a checkpoint is given, else on the stock model.

A method's per-batch work before generation (ReW's sentence embedding and MLP, CoT's two routing
generations) is timed separately: the added latency the DIYSink paper reports next to accuracy.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch

from sinktrain.modeling.slot_select import SELECTIONS, selecting_slots
from sinktrain.data.eval_set import EvalSample
from sinktrain.errors import SinkTrainError

METHODS = ("stock", "sink_to_front", "diysink", "diysink_rew", "diysink_cot", "sink_only", "non_sink_only")
ONLY = {"sink_only": "sink", "non_sink_only": "non"}

Prepared = tuple[ContextManager, list[dict] | None]  # the batch's generation context, per-sample details


@dataclass
class EvalMethod:
    name: str
    prepare: Callable[[list[EvalSample]], Prepared] = lambda samples: (nullcontext(), None)
    summary: Callable[[], dict] = dict  # method-wide facts for the results (e.g. routing counts)
    loaded: dict = field(default_factory=dict)  # what it was built from (files, prompts)


def check_method_flags(method: str, diysink_checkpoint: str | None, rew: str | None, cot_prompts: str | None, gates: str | None) -> None:
    if method not in METHODS:
        raise SinkTrainError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if gates and method != "stock":
        raise SinkTrainError(f"--gates are LSG's, on the stock model; --method {method} changes that model. Pass --method stock with --gates")
    if diysink_checkpoint and method in ("stock", "sink_to_front"):
        raise SinkTrainError(f"--diysink_checkpoint is a DualMLP model; --method {method} evaluates the stock one. Use --method diysink (or another diysink_*)")
    if (rew is not None) != (method == "diysink_rew"):
        raise SinkTrainError("--method diysink_rew needs --rew DIR (a recipes/diysink_rew.py run's rew/), and --rew needs that method")
    if cot_prompts and method != "diysink_cot":
        raise SinkTrainError("--cot_prompts sets CoT routing's questions; pass it with --method diysink_cot")


def build_method(backbone, method: str, diysink_checkpoint: str | None = None, sink_first: bool = True, rew: str | None = None,
                 sentence_encoder: str | None = None, cot_prompts: str | None = None, template: str | None = None,
                 device: str = "cpu") -> EvalMethod:
    """Set ``method`` up on ``backbone`` (in place) and return its per-batch hooks."""
    check_method_flags(method, diysink_checkpoint, rew, cot_prompts, None)
    if method == "stock":
        return EvalMethod(method)
    if method == "sink_to_front":
        from sinktrain.modeling.diysink import sink_to_front

        sink_to_front(backbone)
        return EvalMethod(method)
    loaded = attach_diysink(backbone, diysink_checkpoint, sink_first) if method.startswith("diysink") or diysink_checkpoint else {}
    if method in ONLY:
        keep = SELECTIONS[ONLY[method]]
        return EvalMethod(method, lambda samples: (selecting_slots(backbone, keep, by_mask=True), None), loaded=loaded)
    if method == "diysink_rew":
        return rew_method(backbone, rew, sentence_encoder, device, loaded)
    if method == "diysink_cot":
        return cot_method(backbone, cot_prompts, template, loaded)
    return EvalMethod(method, loaded=loaded)


def attach_diysink(backbone, checkpoint: str | None, sink_first: bool) -> dict:
    from sinktrain.diysink.attach import attach_dual_mlp
    from sinktrain.diysink.checkpoint import load_diysink_checkpoint

    if checkpoint:
        load_diysink_checkpoint(backbone, checkpoint, sink_first=sink_first)
        return {"diysink_checkpoint": str(checkpoint), "sink_first": sink_first}
    attach_dual_mlp(backbone, sink_first=sink_first)
    return {"diysink_checkpoint": None, "sink_first": sink_first, "note": "both projectors are the model's own"}


def rew_method(backbone, directory: str, sentence_encoder: str | None, device: str, loaded: dict) -> EvalMethod:
    from sinktrain.data.encode import first_question
    from sinktrain.diysink.rew_file import load_rew

    rew = load_rew(backbone, directory, sentence_encoder, device)

    def prepare(samples: list[EvalSample]) -> Prepared:
        with torch.no_grad():
            weights = rew.set_questions([first_question(s.question) for s in samples])
        return nullcontext(), [{"w_sink": round(w[0], 4), "w_non": round(w[1], 4)} for w in weights.float().tolist()]

    return EvalMethod("diysink_rew", prepare, loaded={**loaded, "rew": str(directory), "sentence_encoder": rew.encoder.name})


def cot_method(backbone, prompts_file: str | None, template: str | None, loaded: dict) -> EvalMethod:
    from sinktrain.diysink.cot import CotPrompts, CotRouter

    prompts = CotPrompts.load(prompts_file)
    router = CotRouter(backbone, prompts, template=template)
    routes: dict[str, int] = {}

    def prepare(samples: list[EvalSample]) -> Prepared:
        decisions = router.decide(samples)
        for decision in decisions:
            routes[decision.route] = routes.get(decision.route, 0) + 1
        return router.selecting(decisions), [d.to_dict() for d in decisions]

    def summary() -> dict:
        return {"routes": dict(sorted(routes.items())), "unmatched": router.unmatched}

    return EvalMethod("diysink_cot", prepare, summary, {**loaded, "cot_prompts": prompts.to_dict()})
