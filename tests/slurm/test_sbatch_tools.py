"""slurm/find_sink_dims.sbatch and slurm/evaluate.sbatch on the real Slurm cluster (tests/slurm_cluster.py):
each on one node with two ranks (SINKTRAIN_PROCS_PER_NODE=2: torchrun --standalone), the three jobs
submitted at once. The 2-rank profile is byte for byte the one-rank profile, a benchmark split over
2 ranks gives exactly the one-rank answers and scores, and an eval set of shards runs as one
process whatever the node's rank count (two would each evaluate it all and race on --out). The
one-rank references run in this process, on one thread like the jobs, while the jobs run.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from hub_data import MMSTAR_FEATURES, mmstar_row, write_hub_dataset
from scripts import load_script
from sinktrain.demo import demo_eval_pattern

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.multiprocess, pytest.mark.xdist_group("slurm")]  # one worker starts the cluster
IMAGES, EVAL_LIMIT, JOB_TIMEOUT = 32, 8, 300
# 10 questions in batches of 3: 4 batches, so the 2 ranks get unequal shares
ROWS = [mmstar_row(i, "ABCD"[i % 4], "coarse perception" if i % 3 else "math", f"l2 {i % 3}") for i in range(10)]
BENCHMARK = ("--benchmark", "mmstar", "--batch_size", "3", "--max_new_tokens", "5")


def submit(cluster, script: str, out: Path, *flags: str) -> str:
    out.parent.mkdir(parents=True)  # Slurm opens the job's log there
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", SINKTRAIN_PROCS_PER_NODE="2",
               OMP_NUM_THREADS="1")  # the references' arithmetic
    return cluster.sbatch(script, *flags, "--out", str(out), env=env, options=["-o", str(out.with_suffix(".log"))], cwd=ROOT)


def finish(cluster, job: str, log: Path) -> str:
    try:
        info = cluster.wait_state(job, {"COMPLETED"}, JOB_TIMEOUT)
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n--- job log\n{log.read_text()[-4000:] if log.exists() else ''}") from None
    finally:
        cluster.run("scancel", job, check=False)
    assert info["ExitCode"] == "0:0", info
    return log.read_text()


@pytest.fixture(scope="module")
def runs(cluster, demo_model_dir, tmp_path_factory, one_thread):
    """(job out, one-rank reference out, job log) per tool run: the jobs first, then the references here."""
    root = tmp_path_factory.mktemp("slurm-tools")
    copy = str(write_hub_dataset(root / "MMStar", {"val": ROWS}, MMSTAR_FEATURES))
    model = ("--model", str(demo_model_dir))
    flags = {
        "find_sink_dims": ("slurm/find_sink_dims.sbatch", "profile.json", "--num_images", str(IMAGES), "--name", "demo"),
        "benchmark": ("slurm/evaluate.sbatch", "mmstar.json", *model, "--benchmark_path", copy, *BENCHMARK),
        "eval_set": ("slurm/evaluate.sbatch", "eval.json", *model, "--data", demo_eval_pattern(), "--limit", str(EVAL_LIMIT)),
    }
    jobs = {name: submit(cluster, script, root / "job" / name / out, *rest) for name, (script, out, *rest) in flags.items()}
    results = {}
    for name, (script, out, *rest) in flags.items():
        reference = root / "reference" / name / out
        reference.parent.mkdir(parents=True)
        load_script(f"tools/{Path(script).stem}.py").main([*rest, "--out", str(reference)])  # the tool the script runs
        job_out = root / "job" / name / out
        results[name] = job_out, reference, finish(cluster, jobs[name], job_out.with_suffix(".log"))
    return results


def predictions(results_json: Path) -> list[dict]:
    return [json.loads(line) for line in results_json.with_name("mmstar.predictions.jsonl").read_text().splitlines()]


def test_find_sink_dims_job_on_two_ranks_writes_the_one_rank_profile(runs):
    job, reference, log = runs["find_sink_dims"]
    assert torch.get_num_threads() == 1  # the reference ran as the job's ranks do
    assert job.read_text() == reference.read_text(), log[-3000:]


def test_evaluate_job_splits_a_benchmark_over_two_ranks_with_the_one_rank_results(runs):
    job, reference, log = runs["benchmark"]
    two, one = json.loads(job.read_text()), json.loads(reference.read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["samples"] == len(ROWS), log[-3000:]
    assert [p["response"] for p in predictions(job)] == [p["response"] for p in predictions(reference)]
    assert (two["scores"], two["tables"], two["unparsed"]) == (one["scores"], one["tables"], one["unparsed"])


def test_evaluate_job_runs_an_eval_set_of_shards_as_one_process(runs):
    job, reference, log = runs["eval_set"]
    assert log.count(f"wrote {job}") == 1, log[-3000:]  # one process, though the node was given two ranks
    got, want = json.loads(job.read_text()), json.loads(reference.read_text())
    assert len(got["predictions"]) == EVAL_LIMIT and got["predictions"] == want["predictions"]
