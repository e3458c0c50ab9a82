"""Elastic resume on real ranks: the session's 2-rank demo run (tests/conftest.py), checkpointed at
step 50, resumed on ONE rank (its ZeRO-3 checkpoint converted to DeepSpeed's universal checkpoint
automatically; --grad_accum 2 keeps the global batch of 16), stopped there by a signal (a
preemption), and resumed on TWO ranks again to step 100.

The data order is the job's, not a rank's (sinktrain.data.stream): at step 100 every data lane
stands exactly where the uninterrupted run's stood, and on CPU fp32 the weights are bit for bit the
uninterrupted run's (each step sums the same micro-batches' gradients). (The sample sequence itself
across 2 -> 1 and 1 -> 2 is checked key by key in tests/data/test_stream_resume.py.)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from console import check_quiet
from recipe_checks import copy_run, run_ranks
from sinktrain.diysink.checkpoint import consolidated_state

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.multiprocess
RECIPE = ["recipes/diysink_finetune.py", "--ds_config", "ds_configs/zero3.json", "--max_steps", "100"]
SIGNAL_AT = 56


def state(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"step_{step:06d}" / "trainer_state.json").read_text())


def one_rank_until_signal(*flags: str) -> str:
    """One rank (no launcher), SIGUSR1 once it logs step SIGNAL_AT: it saves at the next boundary and exits."""
    rank = subprocess.Popen([sys.executable, *RECIPE, *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    log = []
    for line in rank.stdout:
        log.append(line)
        if f" step {SIGNAL_AT}/" in line:
            rank.send_signal(signal.SIGUSR1)
    assert rank.wait(timeout=300) == 0, "".join(log)[-3000:]
    return "".join(log)


def test_two_ranks_to_one_and_back_continue_the_uninterrupted_run(diysink_demo_run, tmp_path, deepspeed_launch):
    reference = diysink_demo_run[0]
    out = copy_run(reference, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step_000100")
    checkpoints = out / "checkpoints"

    console = one_rank_until_signal("--output_dir", str(out), "--resume", str(checkpoints / "step_000050"))
    check_quiet(console)
    assert "resuming 2 ranks' checkpoint on 1: --grad_accum 2 keeps its global batch of 16" in console
    assert (out / "universal" / "step_000050" / "checkpoint" / "zero").is_dir()
    (ranks,) = run_ranks(out)
    stopped = ranks["stopped_at"]
    assert SIGNAL_AT <= stopped < 100 and ranks["micro_batches"] == 2 * (stopped - 50)
    assert state(out, stopped)["world_size"] == 1 and state(out, stopped)["global_batch"] == 16

    console = deepspeed_launch(*RECIPE, "--output_dir", str(out), "--resume", "auto")
    assert "resuming 1 ranks' checkpoint on 2: --grad_accum 1 keeps its global batch of 16" in console
    assert [(r["start_step"], r["end_step"], r["micro_batches"]) for r in run_ranks(out)] == [(stopped, 100, 100 - stopped)] * 2

    assert state(out, 100)["stream"] == state(reference, 100)["stream"]  # every lane where the uninterrupted run's is
    got, want = consolidated_state(checkpoints / "step_000100"), consolidated_state(reference / "checkpoints" / "step_000100")
    assert got.keys() == want.keys()
    differ = [name for name in want if not torch.equal(got[name], want[name])]
    assert not differ, f"{len(differ)} of {len(want)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"
