"""Resume, then stop on a signal, on 2 ZeRO-3 ranks (a copy of the session's demo run,
tests/conftest.py, checkpointed at step 100).

`--resume auto` continues from step 100 (both ranks start there, every data reader goes on from
its position), then a stop signal (Slurm's preemption warning; scancel's SIGTERM) ends the run at
a step boundary with a complete checkpoint of that step, which --resume auto reads like any other.
The signal goes to ONE rank only: the flag travels with the step's all-reduce, so both ranks stop
after the same step (no rank waits in a collective for the other); rank 1's 2 data workers get it
too and must not die of it (Slurm signals a step's whole process tree).
"""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from console import check_quiet
from recipe_checks import copy_run, scalars
from sinktrain.train.launch_env import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.multiprocess
SAVED, MAX_STEPS = 100, 160  # the run's last checkpoint; a --max_steps the signal comes well before


def descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            children += [int(child), *descendants(int(child))]
    return children


def rank_tree(launcher: int, rank: int) -> list[int]:
    """The rank's process and everything under it (its data workers)."""
    for pid in descendants(launcher):
        if f"--local_rank={rank}" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "):
            return [pid, *descendants(pid)]
    raise AssertionError(f"rank {rank} not found under the launcher")


def stream_consumed(out: Path, step: int) -> dict[str, int]:
    state = json.loads((out / "checkpoints" / f"step_{step:06d}" / "trainer_state.json").read_text())
    return {reader: position["consumed"] for reader, position in state["stream"]["states"].items()}


def resume_and_signal(command: list[str], after_step: int) -> str:
    """Run ``command``; once it logs ``after_step``, SIGUSR1 to rank 1 and its workers; the console."""
    launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    for line in launcher.stdout:
        log.append(line)
        if f" step {after_step}/" in line:
            for pid in rank_tree(launcher.pid, 1):
                os.kill(pid, signal.SIGUSR1)
            break
    log += launcher.stdout.readlines()
    assert launcher.wait(timeout=300) == 0, "".join(log)[-3000:]
    return "".join(log)


def test_resume_then_a_signal_to_one_rank_stops_both_at_a_checkpointed_step(diysink_demo_run, tmp_path):
    out = copy_run(diysink_demo_run[0], tmp_path)
    command = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "recipes/diysink_finetune.py",
               "--ds_config", "ds_configs/zero3.json", "--output_dir", str(out), "--resume", "auto"]
    console = resume_and_signal([*command, "--max_steps", str(MAX_STEPS)], after_step=SAVED + 2)
    check_quiet(console)
    assert f"step_{SAVED:06d} at step {SAVED}" in console and f"step {SAVED + 1}/{MAX_STEPS}" in console and "step 1/" not in console
    stopped = int((out / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert SAVED + 2 <= stopped < MAX_STEPS and f"stopped at step {stopped} on a signal" in console and "SIGUSR1 received" in console
    assert f"stopped at step {stopped} of {MAX_STEPS}: checkpoint {out / 'checkpoints' / f'step_{stopped:06d}'}" in console
    ranks = json.loads((out / "run_info.json").read_text())["ranks"]
    assert [(r["start_step"], r["stopped_at"], r["micro_batches"]) for r in ranks] == [(SAVED, stopped, stopped - SAVED)] * 2
    before, after = stream_consumed(out, SAVED), stream_consumed(out, stopped)
    assert before.keys() == after.keys() and all(after[reader] > before[reader] for reader in before)  # every reader went on
    assert set(scalars(out, "train/loss")) >= set(range(SAVED + 1, stopped + 1))
    state = json.loads((out / "checkpoints" / f"step_{stopped:06d}" / "trainer_state.json").read_text())
    assert state["step"] == stopped and state["world_size"] == 2  # a complete checkpoint, as --resume auto reads it
