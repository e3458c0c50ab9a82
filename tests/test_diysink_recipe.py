"""The main job for real: `deepspeed --num_gpus 2 recipes/diysink_finetune.py` on the demo.

Two CPU ranks with gloo, ZeRO-3 from ds_configs/zero3.json, the demo shards streamed by
WebDataset. Checks the loss falls, parameters are partitioned, every rank ran the same number of
micro-batches, checkpoints are written, TensorBoard holds the loss (`--resume auto` continuing this
run, and stopping it on a signal: tests/train/test_stop_signal.py).
"""

import json

import pytest

from recipe_checks import copy_run, scalars
from recipe_worker import RecipeWorker

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def worker():
    """Refused runs stop before training: one process runs them all (tests/recipe_worker.py)."""
    worker = RecipeWorker()
    yield worker
    worker.close()


def test_demo_learns_on_two_zero3_ranks(diysink_demo_run):
    output_dir, log = diysink_demo_run
    losses = scalars(output_dir, "train/loss")
    assert sorted(losses) == list(range(1, 101))
    first = sum(losses[s] for s in range(1, 6)) / 5
    last = sum(losses[s] for s in range(96, 101)) / 5
    assert last < 0.6 * first, (first, last)
    assert "samples/s" in log and "ETA" in log and "sinks_per_image" in log


def test_zero3_really_partitions_and_ranks_agree(diysink_demo_run):
    output_dir, _ = diysink_demo_run
    ranks = json.loads((output_dir / "run_info.json").read_text())["ranks"]
    assert len(ranks) == 2
    for info in ranks:
        zero = info["zero"]
        assert zero["partitioned"] == zero["parameters"]
        assert zero["local_elements"] <= zero["full_elements"] / 2 + zero["parameters"]  # half each, plus padding
        assert info["zero_at_load"]["partitioned"] == zero["parameters"]  # partitioned by from_pretrained
    assert ranks[0]["micro_batches"] == ranks[1]["micro_batches"] == 100


def test_checkpoints_and_sinks_logged(diysink_demo_run):
    output_dir, _ = diysink_demo_run
    root = output_dir / "checkpoints"
    assert (root / "latest").read_text() == "step_000100"
    assert {p.name for p in root.iterdir() if p.is_dir()} == {"step_000075", "step_000100"}
    state = json.loads((root / "step_000100" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and len(state["stream"]["states"]) == 4
    sinks = scalars(output_dir, "diysink/sinks_per_image")
    assert all(1.0 <= value <= 4.0 for value in sinks.values())


@pytest.mark.parametrize("flags, names", [
    (["--data", "EVAL"], ["trained on --data", "demo-eval", "resume with the checkpoint's --data"]),
    (["--grad_accum", "3"], ["--grad_accum 3:", "global batch of 16 on 2 ranks", "needs --grad_accum 2"]),
])
def test_a_resume_with_other_data_or_another_global_batch_is_refused_early(diysink_demo_run, worker, tmp_path, flags, names):
    from sinktrain import demo

    output_dir = copy_run(diysink_demo_run[0], tmp_path)
    flags = [demo.demo_eval_pattern() if flag == "EVAL" else flag for flag in flags]
    code, stderr = worker.run("recipes/diysink_finetune.py", "--output_dir", str(output_dir), "--resume", "auto", *flags)
    assert code == 2 and all(name in stderr for name in names), stderr
