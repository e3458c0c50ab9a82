"""slurm/train.sbatch on a real two-node Slurm cluster (tests/slurm_cluster.py): one job continues
the session's 2-rank demo run (tests/conftest.py) from its step-75 checkpoint on 2 nodes x 1 CPU
rank (ZeRO-3, 2 data workers per rank), in the script's default output directory
runs/{job name}-{job id}. Mid-run it is requeued by `scontrol requeue` (SIGTERM: the ranks save at
the step boundary, Slurm requeues), later it gets the preemption warning (`scancel --batch
--signal=USR1`, what `--signal=B:USR1@120` sends: save at the step boundary, exit cleanly, the
script requeues), and each time it resumes with --resume auto; at step 100 its weights are bit for
bit the uninterrupted run's.

    python -m pytest tests/slurm        # as root, with slurmctld, slurmd, slurm-client and munge installed
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from recipe_checks import copy_run
from slurm_cluster import SlurmCluster

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.multiprocess, pytest.mark.xdist_group("slurm")]  # one worker starts the cluster
STEPS, SAVE_EVERY, NAME = 100, 5, "sinktrain-test"
RECIPE = ["recipes/diysink_finetune.py", "--ds_config", "ds_configs/zero3.json", "--max_steps", str(STEPS),
          "--save_every", str(SAVE_EVERY)]
JOB_TIMEOUT = 300


class Job:
    """The demo recipe as a 2-node job; its log, and waits on what it logs."""

    def __init__(self, cluster: SlurmCluster, log: Path):
        self.cluster, self.log_path = cluster, log
        # the uninterrupted run's thread count: matmuls split over other thread counts round differently
        env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", SINKTRAIN_PROCS_PER_NODE="1",
                   OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONFAULTHANDLER="1")
        options = ["-N", "2", "-J", NAME, "-o", str(log), "--hold"]  # held: its output directory is prepared first
        self.id = cluster.sbatch("slurm/train.sbatch", *RECIPE, env=env, options=options, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def since(self, banner: str) -> str:
        """The log after the last ``banner`` (nothing before it appears)."""
        before, found, after = self.log().rpartition(banner)
        return after if found else ""

    def wait_for(self, pattern: str, after: str = "train.sbatch: job") -> re.Match:
        """``pattern`` in the log after the last ``after`` (e.g. the current restart's banner)."""
        end = time.monotonic() + JOB_TIMEOUT
        while not (found := re.search(pattern, self.since(after))):
            state = self.cluster.job(self.id)["JobState"]
            assert state in {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING"} and time.monotonic() < end, f"{pattern!r} not seen, job {state}:\n{self.log()[-4000:]}"
            time.sleep(0.2)
        return found

    def finish(self, restarts: int) -> str:
        try:
            info = self.cluster.wait_state(self.id, {"COMPLETED"}, JOB_TIMEOUT)
        except AssertionError as failed:
            raise AssertionError(f"{failed}\n--- job log\n{self.log()[-4000:]}") from None
        finally:
            self.cluster.run("scancel", self.id, check=False)  # a failed test leaves no job that blocks the next one
        assert info["Restarts"] == str(restarts) and info["ExitCode"] == "0:0", info
        return self.log()


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from sinktrain.diysink.checkpoint import consolidated_state

    return consolidated_state(run / "checkpoints" / f"step_{STEPS:06d}")


def test_a_two_node_job_requeued_and_preempted_ends_bitwise_equal_to_the_uninterrupted_run(cluster, diysink_demo_run, tmp_path):
    reference = diysink_demo_run[0]
    job = Job(cluster, tmp_path / "job.out")
    out = ROOT / "runs" / f"{NAME}-{job.id}"  # where the script puts a job's run: a requeued job finds its own
    try:
        shutil.copytree(copy_run(reference, tmp_path), out)
        shutil.rmtree(out / "checkpoints" / f"step_{STEPS:06d}")
        cluster.scontrol("release", job.id)

        job.wait_for(rf"saved checkpoint \S+/step_{80:06d}")
        cluster.scontrol("requeue", job.id)
        job.wait_for(r" step \d+/", after="(restart 1)")
        cluster.run("scancel", "--batch", "--signal=USR1", job.id)
        stopped = int(job.wait_for(r"stopped at step (\d+) on a signal", after="(restart 1)").group(1))
        log = job.finish(restarts=2)

        assert "2 nodes x 1 ranks" in log and "| 2 ranks |" in log and f"output runs/{NAME}-{job.id}" in log
        resumed = [int(step) for step in re.findall(r"resumed from \S+ at step (\d+)", log)]
        assert resumed[0] == 75 and 80 <= resumed[1] <= stopped == resumed[2] < STEPS, log[-3000:]
        assert "SIGTERM received" in log and "SIGUSR1 received" in log and "requeueing job" in log
        assert "Traceback" not in log, log[-3000:]  # torchrun's SignalException is expected and silenced
        for rank in json.loads((out / "run_info.json").read_text())["ranks"]:  # the last restart's ranks
            zero = rank["zero"]
            assert rank["end_step"] == STEPS and zero["partitioned"] == zero["parameters"] > 0 and zero["local_elements"] < zero["full_elements"]
        got, want = final_weights(out), final_weights(reference)
        differ = [name for name in want if not torch.equal(got[name], want[name])]
        assert got.keys() == want.keys() and not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"
    finally:
        shutil.rmtree(out, ignore_errors=True)
