"""A stop signal (Slurm's preemption warning, scancel's SIGTERM) ends a 2-rank ZeRO-3 run at a step
boundary with a checkpoint of that step, and --resume auto continues from it.

The signal goes to ONE rank only: the flag travels with the step's all-reduce, so both ranks stop
after the same step (no rank waits in a collective for the other), with 2 data workers per rank
that must not die of it (Slurm signals a step's whole process tree; here the worker processes of
rank 1 get it too).
"""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from console import check_quiet

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.multiprocess
STEPS = 60


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


def test_a_signal_to_one_rank_stops_both_after_the_same_step_with_a_checkpoint(tmp_path):
    from conftest import free_port

    out = tmp_path / "run"
    flags = ["--ds_config", "ds_configs/zero3.json", "--output_dir", str(out), "--save_every", "1000", "--num_workers", "2"]
    command = ["deepspeed", "--num_gpus", "2", "--master_port", free_port(), "recipes/diysink_finetune.py", *flags]
    launcher = subprocess.Popen([*command, "--max_steps", str(STEPS)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    for line in launcher.stdout:
        log.append(line)
        if " step 3/" in line:
            for pid in rank_tree(launcher.pid, 1):
                os.kill(pid, signal.SIGUSR1)
            break
    log += launcher.stdout.readlines()
    assert launcher.wait(timeout=300) == 0, "".join(log)[-3000:]
    console = "".join(log)
    check_quiet(console)
    stopped = int((out / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert 3 <= stopped < STEPS and f"stopped at step {stopped} on a signal" in console and "SIGUSR1 received" in console
    ranks = json.loads((out / "run_info.json").read_text())["ranks"]
    assert [rank["stopped_at"] for rank in ranks] == [stopped, stopped]
    assert ranks[0]["micro_batches"] == ranks[1]["micro_batches"] == stopped
    resumed = subprocess.run([*command, "--resume", "auto", "--max_steps", str(stopped + 2)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"at step {stopped}" in resumed.stdout and f"step {stopped + 1}/{stopped + 2}" in resumed.stdout
    ranks = json.loads((out / "run_info.json").read_text())["ranks"]
    assert [rank["stopped_at"] for rank in ranks] == [None, None] and [rank["end_step"] for rank in ranks] == [stopped + 2] * 2
    assert (out / "checkpoints" / "latest").read_text() == f"step_{stopped + 2:06d}"
