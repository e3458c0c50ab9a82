"""Shared fixtures: a sinktrain cache for the test run, the tiny demo LLaVA, a DeepSpeed launcher,
the demo recipe runs (once per test run, whichever pytest-xdist worker asks first), the sinktrain
logger's warnings, and a check that no test leaves DeepSpeed shared memory behind.
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
from typing import Callable

import pytest
from filelock import FileLock

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = DATASETS_CACHE = tempfile.mkdtemp(prefix="sinktrain-hf-datasets-")

import sinktrain.demo
from sinktrain.train.launch_env import free_port

# tests/backbones/families.py (every family's demo model, stock inputs and planted sinks) serves tests
# in several directories
sys.path.insert(0, str(Path(__file__).resolve().parent / "backbones"))
from sinktrain.train.distributed import SHM_DIR, SHM_PREFIX

from console import check_quiet
from recipe_checks import LSG_DEMO_SAVE_EVERY, LSG_DEMO_STEPS

SHM_BEFORE = pytest.StashKey[set]()


@pytest.fixture(scope="session", autouse=True)
def _remove_datasets_cache():
    yield
    shutil.rmtree(DATASETS_CACHE, ignore_errors=True)


def shared_root(tmp_path_factory) -> Path:
    """A directory for the whole test run: each pytest-xdist worker's basetemp (popen-gwN) sits in a common one."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(tmp_path_factory, name: str, make: Callable[[Path], str]) -> tuple[Path, str]:
    """``make(directory)`` once per test run, by whichever worker asks first while the others wait
    on a file lock; everyone gets (directory, the console text ``make`` returned)."""
    root = shared_root(tmp_path_factory)
    target, console = root / name, root / f"{name}.console"
    with FileLock(str(root / f"{name}.lock")):
        if not console.exists():
            shutil.rmtree(target, ignore_errors=True)  # what a failed attempt left
            target.mkdir()
            console.write_text(make(target))
    return target, console.read_text()


@pytest.fixture(scope="session", autouse=True)
def _sinktrain_cache(tmp_path_factory):
    """One cache for every worker: sinktrain.demo.cache builds each artefact once, the others wait."""
    cache = shared_root(tmp_path_factory) / "sinktrain-cache"
    cache.mkdir(exist_ok=True)
    os.environ["SINKTRAIN_CACHE"] = str(cache)


def allreduce_segments(port: str = "*") -> set[str]:
    return {path.name for path in SHM_DIR.glob(f"{SHM_PREFIX}_*_{port}_*")}


def pytest_sessionstart(session):
    session.config.stash[SHM_BEFORE] = allreduce_segments()


def pytest_sessionfinish(session):
    """No DeepSpeed process a test starts leaves its /dev/shm all-reduce segment behind (they are
    RAM; leaked ones piled up to 20 GB and stalled a machine): sinktrain.train.distributed.
    ``deepspeed_launch`` checks each launch; this catches the single-process runs, once every
    worker is done (a worker alone would count another's live segments as leaked)."""
    if hasattr(session.config, "workerinput"):
        return
    leaked = allreduce_segments() - session.config.stash[SHM_BEFORE]
    if leaked:
        session.config.get_terminal_writer().line(f"\nDeepSpeed shared memory left in /dev/shm: {sorted(leaked)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    """The main job, once per test run: recipes/diysink_finetune.py on the demo, 2 ZeRO-3 ranks, 100
    steps, checkpoints kept at 75 and 100 (--save_every 25: the tests that continue the run from 75
    reach 100 sooner). (output_dir, console). Read-only: a test that continues the run or changes
    its files works on a copy (recipe_checks.copy_run)."""
    def run(output_dir):
        flags = ["--ds_config", "ds_configs/zero3.json", "--output_dir", str(output_dir), "--save_every", "25"]
        return deepspeed_launch("recipes/diysink_finetune.py", *flags)

    return once(tmp_path_factory, "diysink-demo-run", run)


@pytest.fixture(scope="session")
def lsg_demo_run(tmp_path_factory, deepspeed_launch):
    """recipes/lsg_train.py on the trained demo LLaVA, once per test run: 2 ZeRO-3 ranks, 40 steps,
    checkpoints kept at 30 and 40 (--save_every 10: a resume test continues from 30), --export_model.
    (output_dir, console). Read-only, as diysink_demo_run."""
    def run(output_dir):
        sinktrain.demo.ensure_demo_trained_model()  # built here once, not by two ranks under the launch's timeout
        flags = ["--ds_config", "ds_configs/zero3.json", "--output_dir", str(output_dir), "--max_steps", str(LSG_DEMO_STEPS), "--save_every", str(LSG_DEMO_SAVE_EVERY)]
        return deepspeed_launch("recipes/lsg_train.py", *flags, "--export_model")

    return once(tmp_path_factory, "lsg-demo-run", run)


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
