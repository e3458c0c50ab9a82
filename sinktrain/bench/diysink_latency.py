"""DIYSink's inference-time selection latency (tools/bench_diysink.py documents what it measures).

Two copies of one in-memory model, same weights, both with ``attach_dual_mlp(sink_first=True)``:

* plain: the DualMLP model as is (the baseline of both comparisons, and the model CoT routes on);
* ReW: the same with ``ReWeighting`` (a sentence encoder shaped like all-MiniLM-L6-v2 and an MLP
  with non-neutral weights), which scales each prompt's V-sink and other patch slots.

Every round times two pairs, each back to back: plain generate against ReW (``set_questions`` then
generate), and plain generate against CoT routing (``CotRouter.decide``: two short greedy
generations on the plain model, then generate with the chosen slots).
"""

from __future__ import annotations

import copy
import gc
import os
import statistics
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizer

from sinktrain.bench.inputs import as_prompts, pick_tau, synthetic_samples
from sinktrain.bench.overhead import FAMILIES, SEED, SINK_DIM, SINKS_PER_IMAGE, bench_profile, module_at
from sinktrain.bench.report import report_head, write_report
from sinktrain.bench.timing import LEGEND, Clock, Comparison, print_table, time_generate
from sinktrain.data.encode import first_question
from sinktrain.data.images import concat_vision
from sinktrain.demo import ensure_demo_sentence_encoder
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.cot import CotRouter
from sinktrain.diysink.rew import ReWeighting
from sinktrain.diysink.sentence import DEFAULT, SentenceEncoder
from sinktrain.eval.generate import prompt_inputs

TARGETS = {"rew_total": 1.02}
RATIO_KEYS = {"rew_ratio": "rew_total", "cot_ratio": "cot_total"}
# sentence-transformers/all-MiniLM-L6-v2, the real default encoder (random weights here)
MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)
REW_STD = 0.2  # the ReW MLP's last layer, as after training: weights clearly away from (1, 1)


def minilm_shaped_encoder(workdir: Path) -> str:
    """A random-weight BertModel of all-MiniLM-L6-v2's shape, with the demo encoder's WordPiece tokenizer."""
    out = workdir / "sentence-encoder"
    BertTokenizer.from_pretrained(ensure_demo_sentence_encoder()).save_pretrained(out)
    config = BertConfig(**MINILM)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = BertModel(config)
    # written by hand: save_pretrained imports DeepSpeed (accelerate's unwrap), seconds and a console warning
    config.save_pretrained(out)
    save_file(model.state_dict(), str(out / "model.safetensors"), metadata={"format": "pt"})
    return str(out)


def plus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] + b[0], a[1] + b[1]


class DiySinkBench:
    def __init__(self, args, workdir: Path):
        self.args, self.family = args, FAMILIES[args.family]
        self.plain, self.weighted = self._dual_mlp_models(workdir)
        self.prompt = prompt_inputs(self.plain, self.samples, self.plain.default_template)
        self.questions = [first_question(s.question) for s in self.samples]
        self.encoder_built = args.sentence_encoder is None
        self.encoder = SentenceEncoder(minilm_shaped_encoder(workdir) if self.encoder_built else args.sentence_encoder)
        self.rew = ReWeighting(self.weighted, self.encoder)
        with torch.no_grad():  # as after training (the neutral init would scale by exactly 1)
            torch.nn.init.normal_(self.rew.module.mlp[-1].weight, std=REW_STD, generator=torch.Generator().manual_seed(SEED))
        self.router = CotRouter(self.plain, max_new_tokens=args.cot_tokens)
        self.routes: Counter = Counter()
        self.decide_calls = 0
        self.decisions = []  # the last routing's, for the report
        self.select_s: dict[str, list[float]] = {"rew": [], "cot": []}  # wall seconds of each timed selection
        generate = f"generate {args.new_tokens}"
        self.rew_pair = Comparison("ReW", {"generate": f"{generate} (weighted)", "total": f"select + {generate}"},
                                   {"total": TARGETS["rew_total"]}, keys={"generate": "rew_generate", "total": "rew_total"})
        self.cot_pair = Comparison("CoT", {"generate": f"{generate} (routed)", "total": f"route + {generate}"},
                                   {}, keys={"generate": "cot_generate", "total": "cot_total"})

    def _dual_mlp_models(self, workdir: Path):
        """Two DualMLP backbones of one random model (same weights), V-sinks ~2 per benchmark image;
        sets the benchmark's samples, their slots and the tau chosen on them along the way."""
        family, backbone_class = self.family, self.family.BACKBONE
        torch.manual_seed(SEED)
        model, processor = family.build(self.args, workdir)
        config = model.config
        copied = copy.deepcopy(model)  # before any backbone hooks the model
        plain = backbone_class(model, processor, bench_profile(family, config, float("inf")))  # tau: below, from the images
        weighted = backbone_class(copied, processor, bench_profile(family, config, float("inf")))
        synthetic = synthetic_samples(plain, family, self.args, torch.Generator().manual_seed(SEED))
        self.samples = as_prompts(synthetic)
        self.slots = [n for _, _, slots in synthetic for n in slots]
        vision = concat_vision([plain.image_inputs([image])[0] for _, image, _ in synthetic])
        self.tau = pick_tau(model, module_at(model, backbone_class.connector_path), plain.connector_group,
                            vision, len(self.slots), SINK_DIM, SINKS_PER_IMAGE)
        profile = bench_profile(family, config, self.tau)
        backbone_class.check_profile(config, profile)
        for backbone in (plain, weighted):
            backbone.sink_profile = profile
            attach_dual_mlp(backbone, sink_first=True)
        return plain, weighted

    # -- variants: each returns {"generate": (wall, cpu), "total": (wall, cpu)} -----------------------
    def generate(self, backbone) -> dict:
        new_tokens, length = self.args.new_tokens, self.prompt["input_ids"].shape[1]

        def run(stopping_criteria):
            out = backbone.model.generate(
                **self.prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                pad_token_id=backbone.tokenizer.pad_token_id, stopping_criteria=stopping_criteria,
            )
            assert out.shape[1] == length + new_tokens, out.shape
            return out

        times = time_generate(run, new_tokens - 1)  # the first token, then new_tokens - 1 cached steps
        return {"generate": times["generate"], "total": times["generate"]}

    def plain_generate(self) -> dict:
        return self.generate(self.plain)

    def selected(self, name: str, select, backbone, record: bool) -> dict:
        """``select()`` (timed; returns the generation's context), then the generate inside it."""
        gc.collect()
        start = Clock()
        context = select()
        selection = Clock().since(start)
        with context:
            times = self.generate(backbone)
        if record:
            self.select_s[name].append(selection[0])
        return {"generate": times["generate"], "total": plus(selection, times["generate"])}

    def reweight(self):
        with torch.no_grad():
            self.rew.set_questions(self.questions)
        return nullcontext()

    def route(self):
        decisions = self.router.decide(self.samples)
        self.routes.update(d.route for d in decisions)
        self.decide_calls += 1
        self.decisions = decisions
        return self.router.selecting(decisions)

    # -- rounds ------------------------------------------------------------------------------------
    def round(self, index: int, record: bool) -> None:
        first = index % 2 == 0  # who goes first alternates, between rounds and between the pairs
        plain = self.plain_generate
        self.rew_pair.run(plain, lambda: self.selected("rew", self.reweight, self.weighted, record), stock_first=first, record=record)
        self.cot_pair.run(plain, lambda: self.selected("cot", self.route, self.plain, record), stock_first=not first, record=record)

    def per_sample_ms(self, name: str) -> float:
        return 1000 * statistics.median(self.select_s[name]) / self.args.batch

    def routing(self) -> dict:
        calls = max(self.decide_calls, 1)
        return {
            "decide_calls": self.decide_calls, "samples_per_call": self.args.batch, "routes": dict(sorted(self.routes.items())),
            "mean_routes_per_call": {route: count / calls for route, count in sorted(self.routes.items())},
            "unmatched": self.router.unmatched, "mean_unmatched_per_call": self.router.unmatched / calls,
            "last_decisions": [d.to_dict() for d in self.decisions],
        }


def describe(args, bench: DiySinkBench) -> str:
    encoder = bench.encoder.model
    name = f"random {DEFAULT.split('/')[-1]}-shaped BertModel" if bench.encoder_built else args.sentence_encoder
    return (
        f"batch {args.batch}, prompts {bench.prompt['input_ids'].shape[1]} tokens ({sum(bench.slots)} image slots); "
        f"greedy generate of {args.new_tokens} tokens; ReW: {name} ({sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M, "
        f"{encoder.config.num_hidden_layers} layers, width {bench.encoder.width}); CoT routing: 2 generations of up to "
        f"{args.cot_tokens} tokens; attn {args.attn}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {'pinned' if getattr(args, 'pinned_allocator', False) else 'default'} allocator"
    )


def run(args) -> int:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sinktrain-bench-diysink-") as workdir:
        bench = DiySinkBench(args, Path(workdir))
    gc.freeze()  # the models, tokenizers and vocabularies live to the end: each timed call's gc.collect skips them
    family = bench.family
    parameters = sum(p.numel() for p in bench.plain.model.parameters())
    print(f"{family.NAME} DualMLP {parameters / 1e6:.0f}M params: {family.describe(args, bench.plain.model)}")
    print(describe(args, bench))
    print(f"{args.warmup} warmup + {args.repeats} timed rounds, plain DualMLP and method back to back, alternating ...", flush=True)
    rounds = args.warmup + args.repeats
    for index in range(rounds):
        start = time.perf_counter()
        bench.round(index, record=index >= args.warmup)
        print(f"  round {index + 1}/{rounds} done ({time.perf_counter() - start:.0f} s)", flush=True)
    weights = bench.rew.weights.float().tolist()
    routing = bench.routing()
    selection = {"rew": bench.per_sample_ms("rew"), "cot": bench.per_sample_ms("cot")}

    rows = {**bench.rew_pair.summarise(), **bench.cot_pair.summarise()}
    print()
    print_table(rows)
    load_after = os.getloadavg()
    print(
        f"\n{LEGEND} stock: the plain DualMLP model.\nSelection alone, median per sample: ReW {selection['rew']:.1f} ms "
        f"(sentence encoder + MLP; paper ~10 ms), CoT routing {selection['cot']:.0f} ms (paper ~1.6 s). ReW weights "
        f"[w_sink, w_non] {[[round(w, 3) for w in row] for row in weights]}; routes {routing['routes']} over "
        f"{routing['decide_calls']} decisions of {args.batch}, {routing['unmatched']} unmatched (random-weight answers fall "
        f"back to both). V-sinks per image: {bench.plain.slots.sinks_per_image:.1f} (tau {bench.tau:.3g} on ViT channel "
        f"{SINK_DIM}); load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs."
    )
    if args.json:
        report = {
            **report_head(args, load_before, load_after, parameters),
            "prompt_length": bench.prompt["input_ids"].shape[1],
            "slots_per_image": bench.slots,
            "tau_v": bench.tau,
            "v_sinks_per_image": bench.plain.slots.sinks_per_image,
            "sentence_encoder": {"name": args.sentence_encoder or f"random weights, {DEFAULT} shape", "width": bench.encoder.width,
                                 "parameters": sum(p.numel() for p in bench.encoder.model.parameters())},
            "rew_weights": weights,
            "selection_ms_per_sample": selection,
            "selection_samples_ms": {name: [1000 * v for v in values] for name, values in bench.select_s.items()},
            "routing": routing,
            **{key: rows[measure]["ratio"] for key, measure in RATIO_KEYS.items()},
            "targets": TARGETS,
            "measures": rows,
        }
        write_report(args.json, report)
    return 0
