"""One run interrupted every way a cluster interrupts it, ending bit for bit where the
uninterrupted run ends: the session's 2-rank demo run (tests/conftest.py, ZeRO-3, 2 data workers
per rank), from its step-75 checkpoint to step 100,

1. resumed on ONE rank (its checkpoint converted to DeepSpeed's universal checkpoint
   automatically; --grad_accum 2 keeps the global batch of 16), stopped by SIGUSR1 (a preemption
   warning): it saves at the next step boundary and exits;
2. resumed on TWO ranks (1 -> 2), saving every 5 steps, and killed with SIGKILL (every rank and
   data worker at once) at a random step: it loses only the steps since the last save;
3. resumed and killed with SIGKILL while a checkpoint is being written: the half-written one never
   becomes a checkpoint;
4. resumed to step 100.

The data order is the job's, not a rank's (sinktrain.data.stream): at step 100 every data lane
stands where the uninterrupted run's stood, and on CPU fp32 the weights equal it bit for bit.
(The sample sequence across 2 -> 1 and 1 -> 2 is checked key by key in tests/data/test_stream_resume.py.)
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from console import check_quiet
from recipe_checks import copy_run, run_ranks
from sinktrain.diysink.checkpoint import consolidated_state
from sinktrain.train.checkpoint import complete_tags
from sinktrain.train.launch_env import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.multiprocess
RECIPE = ["recipes/diysink_finetune.py", "--ds_config", "ds_configs/zero3.json", "--max_steps", "100"]
START, SIGNAL_AT, SAVE_EVERY = 75, 77, 5


def state(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"step_{step:06d}" / "trainer_state.json").read_text())


def last_step(run: Path) -> int:
    return int(complete_tags(run / "checkpoints")[-1].removeprefix("step_"))


def start(command: list[str]) -> subprocess.Popen:
    """A launch in a process group of its own: one killpg reaches the launcher, every rank and every data worker."""
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=dict(os.environ, PYTHONFAULTHANDLER="1"))


def two_ranks(out: Path) -> list[str]:
    return ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), *RECIPE, "--output_dir", str(out),
            "--resume", "auto", "--save_every", str(SAVE_EVERY)]


def one_rank_until_signal(out: Path, resume: Path) -> str:
    """One rank (no launcher), SIGUSR1 once it logs step SIGNAL_AT: it saves at the next boundary and exits."""
    rank = start([sys.executable, *RECIPE, "--output_dir", str(out), "--resume", str(resume)])
    log = []
    for line in rank.stdout:
        log.append(line)
        if f" step {SIGNAL_AT}/" in line:
            rank.send_signal(signal.SIGUSR1)
    assert rank.wait(timeout=300) == 0, "".join(log)[-3000:]
    return "".join(log)


def kill_at_step(out: Path, step: int) -> str:
    launch, log = start(two_ranks(out)), []
    for line in launch.stdout:
        log.append(line)
        if f" step {step}/" in line:
            os.killpg(launch.pid, signal.SIGKILL)
            break
    launch.wait(timeout=60)
    return "".join(log)


def kill_while_saving(out: Path) -> tuple[str, str]:
    """SIGKILL the moment a checkpoint's staging directory appears (DeepSpeed is writing into it);
    (the staging directory's tag, the newest complete checkpoint after the kill)."""
    launch = start(two_ranks(out))
    deadline = time.monotonic() + 300
    while not (staged := list((out / "checkpoints").glob(".tmp-step_*"))):
        assert launch.poll() is None and time.monotonic() < deadline, launch.stdout.read()[-3000:]
        time.sleep(0.005)
    os.killpg(launch.pid, signal.SIGKILL)
    launch.wait(timeout=60)
    return staged[0].name.removeprefix(".tmp-"), complete_tags(out / "checkpoints")[-1]


def test_preempted_resized_and_killed_run_ends_bitwise_equal_to_the_uninterrupted_run(diysink_demo_run, tmp_path, deepspeed_launch):
    reference = diysink_demo_run[0]
    out = copy_run(reference, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step_000100")
    # between two saves (a kill right after a save's step line may or may not find the save done)
    kill_step = random.choice([step for step in range(SIGNAL_AT + 3, SIGNAL_AT + 12) if step % SAVE_EVERY])
    where = f"(SIGKILL at step {kill_step})"

    console = one_rank_until_signal(out, out / "checkpoints" / f"step_{START:06d}")
    check_quiet(console)
    assert "resuming 2 ranks' checkpoint on 1: --grad_accum 2 keeps its global batch of 16" in console
    assert (out / "universal" / f"step_{START:06d}" / "checkpoint" / "zero").is_dir()
    (rank,) = run_ranks(out)
    stopped = rank["stopped_at"]
    assert SIGNAL_AT <= stopped < 100 and rank["micro_batches"] == 2 * (stopped - START)
    assert last_step(out) == stopped and state(out, stopped)["world_size"] == 1

    console = kill_at_step(out, kill_step)
    assert "resuming 1 ranks' checkpoint on 2: --grad_accum 1 keeps its global batch of 16" in console, console[-3000:]
    saved = max(stopped, kill_step - kill_step % SAVE_EVERY)
    assert last_step(out) == saved, where  # only the steps since the last periodic save are lost

    killed_save, newest = kill_while_saving(out)
    if (out / "checkpoints" / f".tmp-{killed_save}").exists():  # killed midway (not after the rename): never published
        assert newest < killed_save, where
    resume_at = last_step(out)
    console = deepspeed_launch(*RECIPE, "--output_dir", str(out), "--resume", "auto", "--save_every", str(SAVE_EVERY))
    assert re.search(rf"resumed from \S+step_{resume_at:06d} at step {resume_at}\b", console), (where, console[-3000:])
    assert all(r["end_step"] == 100 for r in run_ranks(out)), where
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the killed save's staging dir was cleaned up

    assert state(out, 100)["stream"] == state(reference, 100)["stream"], where  # every lane where the uninterrupted run's is
    got, want = consolidated_state(out / "checkpoints" / "step_000100"), consolidated_state(reference / "checkpoints" / "step_000100")
    assert got.keys() == want.keys()
    differ = [name for name in want if not torch.equal(got[name], want[name])]
    assert not differ, f"{where} {len(differ)} of {len(want)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"
