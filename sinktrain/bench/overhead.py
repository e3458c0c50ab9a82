"""The LSG and DualMLP overhead benchmark (tools/bench_overhead.py documents what it measures).

Three copies of one in-memory model, same weights, same inputs:

* stock: the bare transformers model, no sinktrain hook at all (what the methods are compared to);
* LSG: a family backbone (slot tracking hooks) with ``LayerGating`` gates on ``--gate_layers``;
* DualMLP: a family backbone with ``attach_dual_mlp(sink_first=True)``.

Every round times three pairs, each back to back: the LSG train step against the stock one (both
train the connector, so both backward to it; LSG also trains its gates), a greedy ``generate``
with the KV cache (prefill, decode / token, total), and the DualMLP train step against the stock
one (connector trainable; with ``--dual_mlp_llm`` the LLM too, as DIYSink stage 2).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

import torch

from sinktrain.backbones.profiles import SinkProfile
from sinktrain.bench import llava, qwen2_vl
from sinktrain.bench.inputs import build_inputs, pick_tau
from sinktrain.bench.report import report_head, write_report
from sinktrain.bench.timing import LEGEND, Comparison, print_table, time_call, time_generate
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.lsg.gating import LayerGating

FAMILIES = {"llava": llava, "qwen2_vl": qwen2_vl}
SEED = 0
SINK_DIM = 0  # the profile's ViT channel; tau is chosen on the benchmark images
SINKS_PER_IMAGE = 2
TARGETS = {"train_step": 1.05, "prefill": 1.02, "decode_per_token": 1.02, "dual_mlp_train_step": 1.03}
RATIO_KEYS = {"train_ratio": "train_step", "prefill_ratio": "prefill", "decode_ratio": "decode_per_token", "dual_mlp_train_ratio": "dual_mlp_train_step"}
LOSS_TOLERANCE = 1e-4  # neutral gates: the LSG loss equals the stock loss


def module_at(model: torch.nn.Module, path: str) -> torch.nn.Module:
    for name in path.split("."):
        model = getattr(model, name)
    return model


def sinktrain_hooks(model: torch.nn.Module) -> int:
    """Forward hooks of sinktrain's on the model (transformers installs its own output recorders)."""
    hooks = [hook for m in model.modules() for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return sum(getattr(hook, "__module__", "").startswith("sinktrain.") for hook in hooks)


def train_only(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> None:
    wanted = {id(p) for p in parameters}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in wanted)


def bench_profile(family, config, tau: float) -> SinkProfile:
    """The benchmark models' sink profile: V-sinks where ViT channel SINK_DIM reaches ``tau``."""
    return SinkProfile(
        name="bench", vision_tower="bench-vit", vit_dims=[SINK_DIM], vit_layer=family.VIT_LAYER, criterion="dim_threshold",
        tau_v=tau, hidden_size_vit=family.BACKBONE.vision_width_of(config), hidden_size_llm=config.text_config.hidden_size,
    )


def non_vision(model: torch.nn.Module, backbone_class) -> list[torch.nn.Parameter]:
    """Everything but the ViT (the connector included): what DIYSink stage 2 trains."""
    connector = {id(p) for p in module_at(model, backbone_class.connector_path).parameters()}
    vision = {id(p) for p in module_at(model, backbone_class.vision_tower_path).parameters() if id(p) not in connector}
    return [p for p in model.parameters() if id(p) not in vision]


class Bench:
    def __init__(self, args, workdir: Path):
        self.args, self.family = args, FAMILIES[args.family]
        family = self.family
        torch.manual_seed(SEED)
        model, processor = family.build(args, workdir)
        self.stock, dual_model = copy.deepcopy(model), copy.deepcopy(model)  # before any backbone hooks the model
        self.gated = family.BACKBONE(model, processor, self._profile(float("inf")))  # tau: below, from the images
        self.dual = family.BACKBONE(dual_model, processor, self._profile(float("inf")))
        generator = torch.Generator().manual_seed(SEED)
        self.batch, self.prompt, self.slots = build_inputs(self.gated, family, args, generator)
        self.stock_inputs = self.gated.model_inputs(self.batch.input_ids, self.batch.attention_mask, self.batch.vision)
        backbone_class = family.BACKBONE
        self.tau = pick_tau(self.stock, module_at(self.stock, backbone_class.connector_path), self.gated.connector_group,
                            self.batch.vision, len(self.slots), SINK_DIM, SINKS_PER_IMAGE)
        profile = self._profile(self.tau)
        backbone_class.check_profile(self.stock.config, profile)
        self.gated.sink_profile = self.dual.sink_profile = profile
        assert sinktrain_hooks(self.stock) == 0 < sinktrain_hooks(self.gated.model), "sinktrain hooks on the stock model"

        # trainable per variant (set before each step: the stock model serves both pairs)
        self.stock_lsg = list(module_at(self.stock, backbone_class.connector_path).parameters())
        self.stock_dual = non_vision(self.stock, backbone_class) if args.dual_mlp_llm else self.stock_lsg
        self.gating = LayerGating(self.gated, args.gate_layers, args.groups)  # neutral gates until the warmup is done
        self.gates = list(self.gating.gates.parameters())
        self.gated_trainable = list(self.gated.connector.parameters()) + self.gates
        attach_dual_mlp(self.dual, sink_first=True)
        self.dual_trainable = non_vision(self.dual.model, backbone_class) if args.dual_mlp_llm else list(self.dual.connector.parameters())
        self.generator = generator
        self.losses: dict[str, float] = {}
        self.lsg = Comparison("LSG", {"train_step": "train step (fwd+bwd)"}, TARGETS)
        generate = f"generate {1 + args.new_tokens} (total)"
        self.generation = Comparison("LSG", {"prefill": "prefill (to 1st token)", "decode_per_token": "decode / token", "generate": generate}, TARGETS)
        self.dual_mlp = Comparison("DualMLP", {"train_step": "train step (fwd+bwd)"}, {"train_step": TARGETS["dual_mlp_train_step"]}, keys={"train_step": "dual_mlp_train_step"})

    def _profile(self, tau: float) -> SinkProfile:
        return bench_profile(self.family, self.stock.config, tau)

    # -- variants: each returns {measure: (wall, cpu)} --------------------------------------------
    def _train(self, name: str, model: torch.nn.Module, forward, trainable: list) -> dict:
        train_only(model, trainable)  # untimed: the stock model trains other parameters per pair
        for parameter in trainable:
            parameter.grad = None

        def step():
            loss = forward()
            loss.backward()
            self.losses[name] = float(loss.detach())

        times = time_call("train_step", step)
        for parameter in trainable:
            parameter.grad = None  # free them (the step allocates them anew in every variant)
        return times

    def stock_train(self, name: str, trainable: list) -> dict:
        return self._train(name, self.stock, lambda: self.stock(**self.stock_inputs, labels=self.batch.labels).loss, trainable)

    def gated_train(self) -> dict:
        return self._train("lsg", self.gated.model, lambda: self.gated.forward(self.batch).loss, self.gated_trainable)

    def dual_train(self) -> dict:
        return self._train("dual_mlp", self.dual.model, lambda: self.dual.forward(self.batch).loss, self.dual_trainable)

    def generate(self, model: torch.nn.Module) -> dict:
        new_tokens, length = self.args.new_tokens, self.prompt["input_ids"].shape[1]

        def run(stopping_criteria):
            out = model.generate(
                **self.prompt, max_new_tokens=1 + new_tokens, min_new_tokens=1 + new_tokens, do_sample=False,
                pad_token_id=self.gated.tokenizer.pad_token_id, stopping_criteria=stopping_criteria,
            )
            assert out.shape[1] == length + 1 + new_tokens, out.shape
            return out

        return time_generate(run, new_tokens)

    # -- rounds ------------------------------------------------------------------------------------
    def round(self, index: int, record: bool) -> None:
        first = index % 2 == 0  # who goes first alternates, between rounds and between measurements
        self.lsg.run(lambda: self.stock_train("stock_lsg", self.stock_lsg), self.gated_train, stock_first=first, record=record)
        self.generation.run(lambda: self.generate(self.stock), lambda: self.generate(self.gated.model), stock_first=not first, record=record)
        self.dual_mlp.run(lambda: self.stock_train("stock_dual_mlp", self.stock_dual), self.dual_train, stock_first=first, record=record)

    def check_neutral_gates(self) -> float:
        """Before the gates move: the LSG step computed the stock loss (same model, same inputs)."""
        lsg, stock = self.losses["lsg"], self.losses["stock_lsg"]
        difference = abs(lsg - stock)
        if difference > LOSS_TOLERANCE * max(1.0, abs(stock)):
            raise RuntimeError(f"neutral gates, yet the LSG loss {lsg} differs from the stock loss {stock}: not the same model or inputs")
        return difference

    def randomise_gates(self) -> None:
        with torch.no_grad():
            for gate in self.gating.gates.values():  # as after training: scales differ from 1
                torch.nn.init.normal_(gate.out.weight, std=0.1, generator=self.generator)


def run(args) -> int:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sinktrain-bench-") as workdir:
        bench = Bench(args, Path(workdir))
    family, batch = bench.family, bench.batch
    parameters = sum(p.numel() for p in bench.stock.parameters())
    trains = "connector + LLM" if args.dual_mlp_llm else "connector"
    print(f"{family.NAME} {parameters / 1e6:.0f}M params: {family.describe(args, bench.stock)}")
    print(
        f"batch {args.batch} x {batch.input_ids.shape[1]} tokens ({sum(bench.slots)} image slots, {args.text_tokens}+ text "
        f"per sample), prompts {bench.prompt['input_ids'].shape[1]} tokens; LSG gates on layers {args.gate_layers}"
        f"{f' ({args.dropped_gate_layers} dropped: beyond {args.layers} layers)' if args.dropped_gate_layers else ''}, "
        f"{args.groups} groups, {sum(p.numel() for p in bench.gates)} gate params; DualMLP trains the {trains}; "
        f"attn {args.attn}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{'pinned' if getattr(args, 'pinned_allocator', False) else 'default'} allocator"
    )
    print(f"{args.warmup} warmup + {args.repeats} timed rounds, stock and method back to back, alternating ...", flush=True)
    loss_difference = None
    rounds = args.warmup + args.repeats
    for index in range(rounds):
        if index == args.warmup:
            if index > 0:
                loss_difference = bench.check_neutral_gates()
            bench.randomise_gates()
        start = time.perf_counter()
        bench.round(index, record=index >= args.warmup)
        print(f"  round {index + 1}/{rounds} done ({time.perf_counter() - start:.0f} s)", flush=True)
    sinks = {"lsg": bench.gated.slots.sinks_per_image, "dual_mlp": bench.dual.slots.sinks_per_image}

    rows = {**bench.lsg.summarise(), **bench.generation.summarise(), **bench.dual_mlp.summarise()}
    print()
    print_table(rows)
    load_after = os.getloadavg()
    print(
        f"\n{LEGEND} V-sinks per image: {sinks['lsg']:.1f} (tau {bench.tau:.3g} on ViT channel {SINK_DIM}); "
        f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs."
    )
    if args.json:
        report = {
            **report_head(args, load_before, load_after, parameters),
            "sequence_length": batch.input_ids.shape[1],
            "prompt_length": bench.prompt["input_ids"].shape[1],
            "slots_per_image": bench.slots,
            "tau_v": bench.tau,
            "v_sinks_per_image": sinks,
            "neutral_gate_loss_difference": loss_difference,
            **{key: rows[measure]["ratio"] for key, measure in RATIO_KEYS.items()},
            "targets": TARGETS,
            "measures": rows,
        }
        write_report(args.json, report)
    return 0
