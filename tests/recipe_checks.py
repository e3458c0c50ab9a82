"""What the 2-rank recipe tests of every family read back from a run: TensorBoard scalars, the
ZeRO-3 partition report of run_info.json, and a --resume auto continuation."""

import json
import re
import shutil
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

LSG_DEMO_STEPS, LSG_DEMO_SAVE_EVERY = 40, 10  # tests/conftest.py's lsg_demo_run


def scalars(output_dir, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(output_dir / "tensorboard" / "sinktrain"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def mean_loss(output_dir, steps) -> float:
    losses = scalars(output_dir, "train/loss")
    return sum(losses[step] for step in steps) / len(steps)


def run_ranks(output_dir) -> list[dict]:
    return json.loads((output_dir / "run_info.json").read_text())["ranks"]


def check_zero3(output_dir) -> None:
    """Two ranks ran the same number of micro-batches, every parameter partitioned from the load on."""
    ranks = run_ranks(output_dir)
    assert len(ranks) == 2 and ranks[0]["micro_batches"] == ranks[1]["micro_batches"]
    for info in ranks:
        assert info["zero_at_load"]["partitioned"] == info["zero"]["partitioned"] == info["zero"]["parameters"]


def check_resume(recipe: str, flags: list[str], stopped: int, steps: int, deepspeed_launch) -> None:
    """``--resume auto`` continues a run that ended at step ``stopped`` from its checkpoint, to ``steps``."""
    log = deepspeed_launch(f"recipes/{recipe}.py", *flags, "--resume", "auto", "--max_steps", str(steps))
    assert re.search(rf"resumed from \S+step_{stopped:06d} at step {stopped}\b", log), log[-3000:]
    assert f"step {stopped + 1}/{steps}" in log and f"step {steps}/{steps}" in log, log[-3000:]


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of a session-wide run (tests/conftest.py) that a test may continue or change."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy
