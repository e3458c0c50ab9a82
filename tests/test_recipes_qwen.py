"""Both recipes on the tiny Qwen2-VL and Qwen2.5-VL, for real: 2 CPU ranks, ZeRO-3, then resume.

The same demo shards as LLaVA's, in Qwen's chat format and dynamic-resolution image inputs:
DIYSink finetuning from the random tiny model (its loss falls), LSG on the family's trained demo
model (its gates find the sink-reading layer and lower the held-out loss, as on LLaVA:
tests/test_lsg_recipe.py). Each run
is partitioned at load, writes TensorBoard, and continues with --resume auto.
"""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo.trained import SINK_READING_LAYER
from sinktrain.lsg.gate_file import gating_from_checkpoint

from held_out import held_out_loss

pytestmark = pytest.mark.multiprocess
FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
DIYSINK_STEPS, LSG_STEPS = 30, 30


def scalars(output_dir, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(output_dir / "tensorboard" / "sinktrain"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def check_zero3(output_dir) -> None:
    ranks = json.loads((output_dir / "run_info.json").read_text())["ranks"]
    assert len(ranks) == 2 and ranks[0]["micro_batches"] == ranks[1]["micro_batches"]
    for info in ranks:
        assert info["zero_at_load"]["partitioned"] == info["zero"]["partitioned"] == info["zero"]["parameters"]


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
    log = deepspeed_launch("recipes/diysink_finetune.py", *flags, "--resume", "auto", "--max_steps", str(DIYSINK_STEPS + 2))
    assert f"at step {DIYSINK_STEPS}" in log and f"step {DIYSINK_STEPS + 1}/{DIYSINK_STEPS + 2}" in log


def test_lsg_finds_the_sink_reading_layer_and_resumes(name, tmp_path, deepspeed_launch, one_thread):
    flags = ["--ds_config", "ds_configs/zero3.json", "--model", f"demo:{name}", "--output_dir", str(tmp_path), "--save_every", "15"]
    deepspeed_launch("recipes/lsg_train.py", *flags, "--max_steps", str(LSG_STEPS))
    check_zero3(tmp_path)
    assert len(EventAccumulator(str(tmp_path / "tensorboard" / "sinktrain"), size_guidance={"histograms": 0}).Reload().Histograms("lsg/r_sink/layer_2")) == LSG_STEPS
    backbone = load_backbone(str(demo.ensure_demo_trained_model(name)))
    stock, _ = held_out_loss(backbone)
    gated, r_sink = held_out_loss(backbone, gating_from_checkpoint(backbone, tmp_path / "gates"))
    # Measured with this recipe (2 ranks, 30 steps) for --seed 0 and 1 on the bitwise-reproducible
    # trained demo models: Qwen2-VL stock 0.4256, gated 0.4226 / 0.4225 (a drop of 0.0030-0.0031,
    # near the oracle's best, 0.0045 at fixed (2, 0)); r_sink at layer 2 0.716-0.761, at layers 1
    # and 3 0.40-0.56. Qwen2.5-VL stock 0.4415, gated 0.4188 / 0.4150 (0.023-0.027); r_sink at
    # layer 2 0.72-0.78, elsewhere 0.27-0.46. The loss threshold is half the smallest measured drop
    # (the seeds move it by 0.0001); the r_sink margin half the smallest measured one.
    others = [ratio for layer, ratio in r_sink.items() if layer != SINK_READING_LAYER]
    assert stock - gated > 0.0015, (stock, gated)
    assert r_sink[SINK_READING_LAYER] - max(others) > 0.075, r_sink
    log = deepspeed_launch("recipes/lsg_train.py", *flags, "--resume", "auto", "--max_steps", str(LSG_STEPS + 2))
    assert f"at step {LSG_STEPS}" in log and f"step {LSG_STEPS + 1}/{LSG_STEPS + 2}" in log
