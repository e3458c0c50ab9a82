"""Shared fixtures: a per-session sinktrain cache, the tiny demo LLaVA, a DeepSpeed launcher, the
sinktrain logger's warnings, and a check that no test leaves DeepSpeed shared memory behind.
Benchmark data is read from tiny local datasets only: the Hub is never asked (offline), and
datasets' cache is a temporary directory removed after the session (set at import, before
``datasets`` and ``huggingface_hub`` read their settings)."""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = DATASETS_CACHE = tempfile.mkdtemp(prefix="sinktrain-hf-datasets-")

import sinktrain.demo
from sinktrain.train.launch_env import free_port

# tests/backbones/families.py (every family's demo model, stock inputs and planted sinks) serves tests
# in several directories
sys.path.insert(0, str(Path(__file__).resolve().parent / "backbones"))
from sinktrain.train.distributed import SHM_DIR, SHM_PREFIX

from console import check_quiet
from recipe_checks import LSG_DEMO_STEPS


@pytest.fixture(scope="session", autouse=True)
def _remove_datasets_cache():
    yield
    shutil.rmtree(DATASETS_CACHE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _sinktrain_cache(tmp_path_factory):
    os.environ["SINKTRAIN_CACHE"] = str(tmp_path_factory.mktemp("sinktrain-cache"))


def allreduce_segments(port: str = "*") -> set[str]:
    return {path.name for path in SHM_DIR.glob(f"{SHM_PREFIX}_*_{port}_*")}


@pytest.fixture(scope="session", autouse=True)
def no_leaked_shared_memory():
    """No DeepSpeed process a test starts leaves its /dev/shm all-reduce segment behind (they are
    RAM; leaked ones piled up to 20 GB and stalled a machine): sinktrain.train.distributed.
    ``deepspeed_launch`` checks each launch; this catches the single-process runs."""
    before = allreduce_segments()
    yield
    leaked = allreduce_segments() - before
    assert not leaked, f"DeepSpeed shared memory left in /dev/shm: {sorted(leaked)}"


@pytest.fixture(scope="session")
def demo_model_dir():
    return sinktrain.demo.ensure_demo_model()


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def deepspeed_launch():
    """``deepspeed_launch(script, *flags)``: 2 CPU ranks on a free port; returns stdout, asserts success."""

    def launch(script, *flags, timeout=900):
        port = str(free_port())
        command = ["deepspeed", "--num_gpus", "2", "--master_port", port, str(ROOT / script), *flags]
        env = dict(os.environ, PYTHONFAULTHANDLER="1")  # a rank that aborts prints every thread's stack
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        check_quiet(done.stdout + done.stderr)
        leaked = allreduce_segments(port)
        assert not leaked, f"the run left DeepSpeed shared memory in /dev/shm: {sorted(leaked)}"
        return done.stdout

    return launch


@pytest.fixture(scope="session")
def diysink_demo_run(tmp_path_factory, deepspeed_launch):
    """The main job, once per session: recipes/diysink_finetune.py on the demo, 2 ZeRO-3 ranks, 100
    steps, checkpoints kept at 75 and 100 (--save_every 25: the tests that continue the run from 75
    reach 100 sooner). (output_dir, console). Read-only: a test that continues the run or changes
    its files works on a copy (recipe_checks.copy_run)."""
    output_dir = tmp_path_factory.mktemp("diysink-demo-run")
    flags = ["--ds_config", "ds_configs/zero3.json", "--output_dir", str(output_dir), "--save_every", "25"]
    return output_dir, deepspeed_launch("recipes/diysink_finetune.py", *flags)



@pytest.fixture(scope="session")
def lsg_demo_run(tmp_path_factory, deepspeed_launch):
    """recipes/lsg_train.py on the trained demo LLaVA, once per session: 2 ZeRO-3 ranks, 40 steps,
    checkpoints at 20 and 40, --export_model. (output_dir, console). Read-only, as diysink_demo_run."""
    sinktrain.demo.ensure_demo_trained_model()  # built here once, not raced by two ranks under a timeout
    output_dir = tmp_path_factory.mktemp("lsg-demo-run")
    flags = ["--ds_config", "ds_configs/zero3.json", "--output_dir", str(output_dir), "--max_steps", str(LSG_DEMO_STEPS), "--save_every", "20"]
    return output_dir, deepspeed_launch("recipes/lsg_train.py", *flags, "--export_model")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: tiny models gain nothing from threads, and OpenMP threads
    fighting over 2 busy cores made generation ~50x slower. The setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sinktrain_warnings(caplog):
    """Warnings of the 'sinktrain' logger, even where setup_logging turned propagation off."""
    logger = logging.getLogger("sinktrain")
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="sinktrain"):
        yield caplog
    logger.removeHandler(caplog.handler)
