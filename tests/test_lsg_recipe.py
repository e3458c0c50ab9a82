"""LSG for real: `deepspeed --num_gpus 2 recipes/lsg_train.py` on the trained demo LLaVA, then resume.

Two CPU ranks, ZeRO-3: the gates train (and only they reach the optimizer), every backbone
parameter stays bitwise what it was, r_sink histograms reach TensorBoard, gates are saved with
every checkpoint, `--resume auto` continues, and the gates find the trained demo model's
sink-reading layer (sinktrain.demo.trained) and lower the held-out demo loss.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo.trained import SINK_READING_LAYER
from sinktrain.diysink.checkpoint import consolidated_state
from sinktrain.lsg.gate_file import gating_from_checkpoint, read_gates

from held_out import check_gates_started_neutral, held_out_loss, r_sink_events
from recipe_checks import LSG_DEMO_SAVE_EVERY, LSG_DEMO_STEPS, copy_run

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "lsg_train.py"
pytestmark = pytest.mark.multiprocess
STEPS = LSG_DEMO_STEPS


def test_backbone_bitwise_unchanged_and_gates_trained(lsg_demo_run):
    output_dir, _ = lsg_demo_run
    trained = consolidated_state(output_dir / "checkpoints" / f"step_{STEPS:06d}")  # DeepSpeed's own consolidation
    original = LlavaForConditionalGeneration.from_pretrained(str(demo.ensure_demo_trained_model())).state_dict()
    backbone = {key: value for key, value in trained.items() if not key.startswith("sink_gates.")}
    assert set(backbone) == set(original)
    for name, value in original.items():
        assert torch.equal(backbone[name], value), name
    gates, meta = read_gates(output_dir / "gates")
    assert meta.layers == [1, 2, 3] and meta.groups == 2
    assert all(gates[f"{layer}.out.weight"].abs().sum() > 0 for layer in meta.layers)  # moved off the zero init
    gate_numel = sum(value.numel() for value in gates.values())
    for info in json.loads((output_dir / "run_info.json").read_text())["ranks"]:
        assert info["zero"]["trainable_elements"] == gate_numel  # only gates reach the optimizer
        assert info["zero"]["partitioned"] == info["zero"]["parameters"]  # the frozen backbone is partitioned too


def test_r_sink_histograms_and_checkpointed_gates(lsg_demo_run):
    output_dir, log = lsg_demo_run
    events = r_sink_events(output_dir)
    assert len(events.Histograms("lsg/r_sink/layer_2")) == STEPS
    check_gates_started_neutral(events, [1, 2, 3])
    assert (output_dir / "checkpoints" / "step_000030" / "gates" / "gates.safetensors").is_file()
    assert "layer_1" in log and "samples/s" in log


def test_resume_from_the_middle_ends_with_the_uninterrupted_gates_bit_for_bit(lsg_demo_run, deepspeed_launch, tmp_path):
    """--resume auto from step 30 of the session's run (its step-40 checkpoint and final gates
    removed) trains steps 31-40 again in new processes and ends with exactly the uninterrupted
    run's gates: the data order, the gates' start and every reduction are fixed, so no thread or
    process timing leaks into a result (under ZeRO-3 the gates once started random, and the
    held-out gain moved 2.5x between identical runs)."""
    reference = lsg_demo_run[0]
    output_dir = copy_run(reference, tmp_path)
    shutil.rmtree(output_dir / "checkpoints" / f"step_{STEPS:06d}")
    shutil.rmtree(output_dir / "gates")
    log = deepspeed_launch("recipes/lsg_train.py", "--ds_config", "ds_configs/zero3.json", "--output_dir", str(output_dir),
                           "--resume", "auto", "--max_steps", str(STEPS), "--save_every", str(LSG_DEMO_SAVE_EVERY))
    resumed_at = STEPS - LSG_DEMO_SAVE_EVERY
    assert f"at step {resumed_at}" in log and f"step {resumed_at + 1}/{STEPS}" in log
    resumed, uninterrupted = read_gates(output_dir / "gates")[0], read_gates(reference / "gates")[0]
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key


def test_gates_find_the_sink_reading_layer_and_lower_the_held_out_loss(lsg_demo_run, one_thread):
    output_dir, _ = lsg_demo_run
    backbone = load_backbone(str(demo.ensure_demo_trained_model()))
    stock, _ = held_out_loss(backbone)
    gates = output_dir / "checkpoints" / f"step_{STEPS:06d}" / "gates"
    gated, r_sink = held_out_loss(backbone, gating_from_checkpoint(backbone, gates))
    # Measured with this recipe (2 ranks, 40 steps, demo lr 5e-3, one example per turn; a run is
    # bitwise repeatable, so the spread is over --seed 0 and 1) on the bitwise-reproducible trained
    # demo model: stock 0.3459; gated 0.3009 / 0.3039, a drop of 0.0420-0.0450 (12-13%); r_sink at
    # layer 2 0.805-0.912, at layers 1 and 3 0.35-0.52 (margin 0.29-0.39). Both thresholds are half
    # the smallest measured value.
    others = [ratio for layer, ratio in r_sink.items() if layer != SINK_READING_LAYER]
    assert SINK_READING_LAYER == 2 and stock - gated > 0.021, (stock, gated)
    assert r_sink[SINK_READING_LAYER] - max(others) > 0.14, r_sink
