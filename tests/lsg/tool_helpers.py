"""Shared helpers of the tool tests (test_evaluate_tool.py, test_oracle_stack_tools.py) and of the
session fixtures in conftest.py: running a tool, eval sets with chosen answers, the sharpened demo
LLaVA and single-layer gate checkpoints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from sinktrain.backbones.registry import PROFILE_FILE, load_backbone
from sinktrain.data.scenes import demo_samples
from sinktrain.data.shards import write_shards
from sinktrain.eval import normalise
from sinktrain.lsg.gate_file import META, gate_state, meta_for, save_gates
from sinktrain.lsg.scoped import scoped_gating

from console import check_quiet

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SAMPLES, TEXT_SAMPLES = 20, 4
ATTENTION_GAIN = 5.0  # q and k weights x5: attention logits x25
BATCH = "8"
ORACLE_LAYERS = [1, 2]
GATE_LAYERS = [0, 1, 2]


# -- running tools -------------------------------------------------------------------------


def run_tool(name: str, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # same arithmetic as in this process: answers must match bit for bit
    command = [sys.executable, str(ROOT / "tools" / name), *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_quiet(done.stdout + done.stderr)
    return done.stdout


def answers(results) -> list[str]:
    return [p.prediction for p in results.predictions]


# -- eval sets -----------------------------------------------------------------------------


def demo_records(images: int, texts: int) -> list[tuple]:
    """`texts` text-only then `images` image samples of a demo stream, as (record, png, ext)."""
    picked = {True: [], False: []}
    for record, png in demo_samples(1000, seed=7):
        wanted = picked[png is not None]
        if len(wanted) < (images if png is not None else texts):
            wanted.append((record, png, None if png is None else "png"))
    return picked[False] + picked[True]  # text-only first: a small --limit still holds some


def write_eval_set(directory: Path, triples: list[tuple]) -> str:
    write_shards(triples, str(directory / "eval-%06d.tar"), max_samples_per_shard=16)
    return str(directory / "eval-*.tar")


def with_answers(triples: list[tuple], replies: list[str]) -> list[tuple]:
    """The same records with the first gpt answer replaced: reference answers we choose."""
    out = []
    for (record, png, ext), reply in zip(triples, replies):
        turns = [dict(turn) for turn in record["conversations"]]
        turns[1]["value"] = reply
        out.append((dict(record, conversations=turns), png, ext))
    return out


def exact_match(replies: list[str], results) -> float:
    return 100.0 * sum(normalise(a) == normalise(b) for a, b in zip(replies, answers(results))) / len(replies)


# -- models and gates ----------------------------------------------------------------------


def sharp_model(source: Path, target: Path) -> Path:
    """The demo LLaVA with every query and key projection scaled up, saved as a model directory.

    A random init attends almost uniformly, so scaling visual keys by 0..2 barely moves its
    logits and never its greedy answers; sharper attention makes LSG's key scaling matter."""
    backbone = load_backbone(str(source))
    with torch.no_grad():
        for layer in backbone.decoder_layers():
            layer.self_attn.q_proj.weight.mul_(ATTENTION_GAIN)
            layer.self_attn.k_proj.weight.mul_(ATTENTION_GAIN)
    backbone.model.save_pretrained(target)
    backbone.processor.save_pretrained(target)
    (target / PROFILE_FILE).write_bytes((source / PROFILE_FILE).read_bytes())
    return target


def gate_dir(backbone, directory: Path, layer: int, bias: tuple[float, float]) -> Path:
    """A 'trained' single-layer gate checkpoint: non-zero output weights, saved as lsg_train does."""
    torch.manual_seed(layer)  # before the gates are made: every weight is reproducible, whatever ran before
    with scoped_gating(backbone, [layer]) as gating:
        with torch.no_grad():
            gate = gating.gates[str(layer)]
            torch.nn.init.normal_(gate.out.weight, std=0.1)  # input-dependent, bias-dominated
            gate.out.bias.copy_(torch.tensor(bias))
        save_gates(directory, gate_state(gating), meta_for(gating))
    return directory


def other_hidden_size(source: Path, target: Path) -> Path:
    """A copy of a gate checkpoint whose gates.json claims another LLM width."""
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    meta = json.loads((target / META).read_text())
    (target / META).write_text(json.dumps(dict(meta, hidden_size=256)))
    return target
