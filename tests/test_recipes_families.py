"""Both recipes on the tiny Qwen2-VL and Qwen2.5-VL, for real: 2 CPU ranks, ZeRO-3, then resume.

The same demo shards as LLaVA's, in Qwen's chat format and dynamic-resolution image inputs:
DIYSink finetuning from the random tiny model (its loss falls), LSG on the family's trained demo
model (its gates find the sink-reading layer and lower the held-out loss, as on LLaVA:
tests/test_lsg_recipe.py). Each run
is partitioned at load and writes TensorBoard; each recipe and each family continues once with
--resume auto.
"""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo.trained import SINK_READING_LAYER
from sinktrain.lsg.gate_file import gating_from_checkpoint

from held_out import check_gates_started_neutral, held_out_loss, r_sink_events

pytestmark = pytest.mark.multiprocess
FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
DIYSINK_STEPS, LSG_STEPS = 30, 30
# Resuming is family-independent code (the LLaVA tests resume both recipes too): each recipe
# resumes on one Qwen family and each family resumes once, which saves two launches.
RESUMES = {"diysink_finetune": "qwen2_vl", "lsg_train": "qwen2_5_vl"}


def scalars(output_dir, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(output_dir / "tensorboard" / "sinktrain"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def check_zero3(output_dir) -> None:
    ranks = json.loads((output_dir / "run_info.json").read_text())["ranks"]
    assert len(ranks) == 2 and ranks[0]["micro_batches"] == ranks[1]["micro_batches"]
    for info in ranks:
        assert info["zero_at_load"]["partitioned"] == info["zero"]["partitioned"] == info["zero"]["parameters"]


def check_resume(recipe: str, flags: list[str], steps: int, deepspeed_launch) -> None:
    log = deepspeed_launch(f"recipes/{recipe}.py", *flags, "--resume", "auto", "--max_steps", str(steps + 2))
    assert f"at step {steps}" in log and f"step {steps + 1}/{steps + 2}" in log


@pytest.fixture(scope="module", params=FAMILIES)
def name(request):
    demo.ensure_demo_trained_model(request.param)  # built once here, not raced by two ranks
    return request.param


def test_diysink_finetune_learns_and_resumes(name, tmp_path, deepspeed_launch):
    flags = ["--ds_config", "ds_configs/zero3.json", "--model", f"demo:{name}", "--output_dir", str(tmp_path), "--save_every", "15"]
    log = deepspeed_launch("recipes/diysink_finetune.py", *flags, "--max_steps", str(DIYSINK_STEPS))
    losses = scalars(tmp_path, "train/loss")
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(DIYSINK_STEPS - 4, DIYSINK_STEPS + 1)) / 5
    # Measured for --seed 0 and 1: last / first 0.535 / 0.484 (Qwen2-VL), 0.487 / 0.464 (Qwen2.5-VL),
    # from ~5.96 to 2.76-3.19.
    assert last < 0.7 * first, (first, last)
    assert "sinks_per_image" in log
    check_zero3(tmp_path)
    if name == RESUMES["diysink_finetune"]:
        check_resume("diysink_finetune", flags, DIYSINK_STEPS, deepspeed_launch)


def test_lsg_finds_the_sink_reading_layer_and_resumes(name, tmp_path, deepspeed_launch, one_thread):
    flags = ["--ds_config", "ds_configs/zero3.json", "--model", f"demo:{name}", "--output_dir", str(tmp_path), "--save_every", "15"]
    deepspeed_launch("recipes/lsg_train.py", *flags, "--max_steps", str(LSG_STEPS))
    check_zero3(tmp_path)
    events = r_sink_events(tmp_path)
    assert len(events.Histograms("lsg/r_sink/layer_2")) == LSG_STEPS
    check_gates_started_neutral(events, [1, 2, 3])
    backbone = load_backbone(str(demo.ensure_demo_trained_model(name)))
    stock, _ = held_out_loss(backbone)
    gated, r_sink = held_out_loss(backbone, gating_from_checkpoint(backbone, tmp_path / "gates"))
    # Measured with this recipe (2 ranks, 30 steps, demo lr 5e-3; a run is bitwise repeatable, so
    # the spread is over --seed 0 and 1) on the bitwise-reproducible trained demo models: Qwen2-VL
    # stock 0.4256, gated 0.4212 / 0.4211 (a drop of 0.0043-0.0045, the oracle's best fixed
    # coefficients gain 0.0045), r_sink at layer 2 0.85-0.92, at layers 1 and 3 0.44-0.52;
    # Qwen2.5-VL stock 0.4415, gated 0.4160 / 0.4130 (0.025-0.029), r_sink at layer 2 0.96-0.97,
    # elsewhere 0.29-0.42. Both thresholds are half the smallest measured value.
    others = [ratio for layer, ratio in r_sink.items() if layer != SINK_READING_LAYER]
    assert stock - gated > 0.0021, (stock, gated)
    assert r_sink[SINK_READING_LAYER] - max(others) > 0.16, r_sink
    if name == RESUMES["lsg_train"]:
        check_resume("lsg_train", flags, LSG_STEPS, deepspeed_launch)
