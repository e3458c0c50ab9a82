"""Rank resolution from the launcher's, srun's or no variables (sinktrain.train.launch_env), and
the contradictions that would make ranks collide, refused with what to do."""

import pytest

from sinktrain.errors import SinkTrainError
from sinktrain.train.launch_env import PORT_BASE, first_host, resolve_launch

TORCHRUN = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu03", "MASTER_PORT": "29500"}
SRUN = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[03-04]"}


@pytest.mark.parametrize("nodelist, first", [
    ("gpu[03-05,09],cpu1", "gpu03"), ("n1,n2", "n1"), ("node7", "node7"), ("rack[1-2]-node[04-08]", "rack1-node04"), ("a[7,3]", "a7"),
])
def test_first_host_of_a_node_list(nodelist, first):
    assert first_host(nodelist) == first


def test_a_launcher_is_used_as_is():
    env = resolve_launch(TORCHRUN)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.source) == (5, 8, 1, "gpu03", 29500, "launcher")


def test_one_launcher_per_node_of_an_srun_step_is_consistent():
    step = {**TORCHRUN, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}  # 2 nodes x 4 processes
    assert resolve_launch(step).world_size == 8


def test_srun_tasks_become_ranks_with_the_first_node_as_master():
    env = resolve_launch(SRUN)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.source) == (3, 4, 1, "gpu03", "slurm")
    assert env.master_port == PORT_BASE + 4242 and resolve_launch({**SRUN, "SLURM_PROCID": "0"}).master_port == env.master_port


def test_no_variables_or_a_one_task_step_is_one_process():
    assert resolve_launch({}).source == resolve_launch({"SLURM_JOB_ID": "1", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}).source == "single"
    assert resolve_launch({}).world_size == 1


@pytest.mark.parametrize("environ, message", [
    ({**TORCHRUN, "SLURM_STEP_NUM_TASKS": "2", "LOCAL_WORLD_SIZE": "8"}, "each launcher must know the others"),  # a one-node launcher per task
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR, MASTER_PORT not"),
    ({**TORCHRUN, "RANK": "8"}, "RANK=8 is outside WORLD_SIZE=8"),
    ({**TORCHRUN, "WORLD_SIZE": "eight"}, "WORLD_SIZE='eight' is not a number"),
    ({**SRUN, "SLURM_PROCID": "4"}, "SLURM_PROCID=4 is outside SLURM_STEP_NUM_TASKS=4"),
    ({key: value for key, value in SRUN.items() if key != "SLURM_STEP_NODELIST"}, "no SLURM_STEP_NODELIST"),
])
def test_contradictions_are_refused(environ, message):
    with pytest.raises(SinkTrainError, match=message):
        resolve_launch(environ)
