"""slurm/train.sbatch on a real two-node Slurm cluster (tests/slurm_cluster.py): it trains the demo
on 2 nodes x 1 CPU rank (ZeRO-3), and a job interrupted mid-run, by `scontrol requeue` or by the
preemption warning (`scancel --batch --signal=USR1`, what `--signal=B:USR1@120` sends), saves at a
step boundary, is requeued, resumes with --resume auto and ends bitwise equal to the uninterrupted
run (CPU fp32, one data worker per rank).

    python -m pytest tests/slurm        # as root, with slurmctld, slurmd, slurm-client and munge installed

One uninterrupted reference run serves every test; a job takes about 40 s on 2 cores.
"""

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from slurm_cluster import SlurmCluster, skip_unless_slurm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.multiprocess
STEPS, SAVE_EVERY = 16, 4
RECIPE = ["recipes/diysink_finetune.py", "--ds_config", "ds_configs/zero3.json", "--max_steps", str(STEPS),
          "--save_every", str(SAVE_EVERY), "--num_workers", "1"]
JOB_TIMEOUT = 300


@pytest.fixture(scope="module")
def cluster():
    skip_unless_slurm()
    import sinktrain.demo
    from sinktrain.demo.data import ensure_demo_shards

    sinktrain.demo.ensure_demo_model()  # built once here: two nodes starting together would both build it
    ensure_demo_shards()
    with SlurmCluster() as running:
        yield running


@pytest.fixture(scope="module")
def jobs(cluster, tmp_path_factory):
    """``jobs.submit(name)`` runs the demo recipe as a 2-node job writing ``DIR/name`` and ``DIR/name.out``."""
    return Jobs(cluster, tmp_path_factory.mktemp("slurm-jobs"))


class Jobs:
    def __init__(self, cluster: SlurmCluster, root: Path):
        self.cluster, self.root = cluster, root
        self.env = dict(
            os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", SINKTRAIN_PROCS_PER_NODE="1",
            OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1",
        )

    def submit(self, name: str, default_output_dir: bool = False) -> str:
        """Writes to DIR/name, or with ``default_output_dir`` where the script puts it: runs/{job name}-{job id}."""
        flags = () if default_output_dir else ("--output_dir", str(self.root / name))
        options = ["-N", "2", "-J", name, "-o", str(self.root / f"{name}.out")]
        return self.cluster.sbatch("slurm/train.sbatch", *RECIPE, *flags, env=self.env, options=options, cwd=ROOT)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.out"
        return path.read_text() if path.exists() else ""

    def wait_for(self, name: str, pattern: str, job: str, timeout: float = JOB_TIMEOUT) -> re.Match:
        end = time.monotonic() + timeout
        while not (found := re.search(pattern, self.log(name))):
            state = self.cluster.job(job)["JobState"]
            assert state in {"PENDING", "RUNNING"} and time.monotonic() < end, f"{pattern!r} not seen, job {state}:\n{self.log(name)[-4000:]}"
            time.sleep(0.2)
        return found

    def finish(self, name: str, job: str, restarts: int, out: Path | None = None) -> str:
        try:
            info = self.cluster.wait_state(job, {"COMPLETED"}, JOB_TIMEOUT)
        except AssertionError as failed:
            raise AssertionError(f"{failed}\n--- job log\n{self.log(name)[-4000:]}") from None
        finally:
            self.cluster.run("scancel", job, check=False)  # a failed test leaves no job that blocks the next one
        assert info["Restarts"] == str(restarts) and info["ExitCode"] == "0:0", info
        log = self.log(name)
        assert f"step {STEPS}/{STEPS}" in log and f"done: checkpoint {out or self.root / name}/checkpoints/step_{STEPS:06d}" in log, log[-3000:]
        return log


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from sinktrain.diysink.checkpoint import consolidated_state

    return consolidated_state(run / "checkpoints" / f"step_{STEPS:06d}")


def assert_bitwise_equal(run: Path, reference: Path) -> None:
    got, want = final_weights(run), final_weights(reference)
    assert got.keys() == want.keys()
    differ = [name for name in want if not torch.equal(got[name], want[name])]
    assert not differ, f"{len(differ)} of {len(want)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def reference(jobs) -> Path:
    """The uninterrupted run every interrupted one is compared with, in the script's default
    output directory (runs/ of the checkout, removed afterwards)."""
    job = jobs.submit("sinktrain-test-reference", default_output_dir=True)
    out = Path("runs") / f"sinktrain-test-reference-{job}"
    try:
        jobs.finish("sinktrain-test-reference", job, restarts=0, out=out)
        yield ROOT / out
    finally:
        shutil.rmtree(ROOT / out, ignore_errors=True)


def test_train_sbatch_trains_on_two_nodes_with_zero3(jobs, reference):
    ranks = json.loads((reference / "run_info.json").read_text())["ranks"]
    assert [rank["rank"] for rank in ranks] == [0, 1] and all(rank["end_step"] == STEPS for rank in ranks)
    for rank in ranks:
        zero = rank["zero"]
        assert zero["partitioned"] == zero["parameters"] > 0 and zero["local_elements"] < zero["full_elements"]
    log = jobs.log("sinktrain-test-reference")
    assert "2 nodes x 1 ranks" in log and "| 2 ranks |" in log and "--resume auto: no checkpoint" in log


def test_scontrol_requeue_mid_run_resumes_and_ends_bitwise_equal(jobs, reference):
    job = jobs.submit("requeued")
    jobs.wait_for("requeued", rf"saved checkpoint \S+/step_{SAVE_EVERY:06d}", job)
    jobs.cluster.scontrol("requeue", job)  # SIGTERM to the job: the ranks save at the step boundary, then Slurm requeues
    log = jobs.finish("requeued", job, restarts=1)
    resumed = int(re.search(r"resumed from \S+ at step (\d+)", log).group(1))
    assert SAVE_EVERY <= resumed < STEPS, log[-3000:]
    assert "SIGTERM received" in log and log.count("train.sbatch: job") == 2
    assert_bitwise_equal(jobs.root / "requeued", reference)


def test_preemption_warning_saves_at_a_step_boundary_and_requeues(jobs, reference):
    job = jobs.submit("preempted")
    jobs.wait_for("preempted", r"step 5/", job)
    jobs.cluster.run("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@120 delivers
    stopped = int(jobs.wait_for("preempted", r"stopped at step (\d+) on a signal", job).group(1))
    log = jobs.finish("preempted", job, restarts=1)
    assert 5 <= stopped < STEPS and f"saved checkpoint {jobs.root}/preempted/checkpoints/step_{stopped:06d}" in log
    assert "requeueing job" in log and f"resumed from {jobs.root}/preempted/checkpoints/step_{stopped:06d} at step {stopped}" in log
    assert "Traceback" not in log, log[-3000:]  # torchrun's SignalException is expected and silenced
    assert_bitwise_equal(jobs.root / "preempted", reference)

