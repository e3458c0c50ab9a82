"""Session fixtures of the tool tests (test_evaluate_tool.py, test_evaluate_methods.py,
test_oracle_stack_tools.py): the eval set, the sharpened demo LLaVA, its stock evaluation, the gate
checkpoints and a short DIYSink run, each built once for every file. No other test in tests/lsg
requests them.

Session fixtures are set up before a module's autouse ``one_thread``, so each builds under
``one_torch_thread`` itself: the same single-thread arithmetic as the tests and the tool
subprocesses (OMP_NUM_THREADS=1), whose answers must match bit for bit.
"""

import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from sinktrain.backbones.registry import load_backbone
from sinktrain.data.eval_set import read_eval_set
from sinktrain.eval import evaluate
from tool_helpers import (
    BATCH,
    GATE_LAYERS,
    IMAGE_SAMPLES,
    ROOT,
    TEXT_SAMPLES,
    demo_records,
    gate_dir,
    ok,
    sharp_model,
    write_eval_set,
)


@contextmanager
def one_torch_thread():
    """Torch on one thread inside the block, as conftest.one_thread does for a module; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def triples():
    with one_torch_thread():
        return demo_records(IMAGE_SAMPLES, TEXT_SAMPLES)


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory, triples):
    with one_torch_thread():
        return write_eval_set(tmp_path_factory.mktemp("eval"), triples)


@pytest.fixture(scope="session")
def model_path(demo_model_dir, tmp_path_factory):
    with one_torch_thread():
        return str(sharp_model(demo_model_dir, tmp_path_factory.mktemp("sharp-model")))


@pytest.fixture(scope="session")
def backbone(model_path):
    with one_torch_thread():
        return load_backbone(model_path)


@pytest.fixture(scope="session")
def samples(eval_dir):
    with one_torch_thread():
        return read_eval_set(eval_dir)


@pytest.fixture(scope="session")
def stock(backbone, samples):
    with one_torch_thread():
        return evaluate(backbone, samples, batch_size=int(BATCH))


@pytest.fixture(scope="session")
def gate_dirs(backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("gates")
    biases = [(3.0, -3.0), (-3.0, 3.0), (2.0, -2.0)]  # c_sink near 2, near 0, ~1.96
    with one_torch_thread():
        return {layer: gate_dir(backbone, root / f"l{layer}", layer, bias) for layer, bias in zip(GATE_LAYERS, biases)}


@pytest.fixture(scope="session")
def diysink_checkpoint(model_path, eval_dir, tmp_path_factory):
    """Three real DIYSink finetuning steps (single process, ZeRO-3) on the eval shards (the
    scheduler's first step has lr 0)."""
    out = tmp_path_factory.mktemp("diysink-run")
    command = [sys.executable, str(ROOT / "recipes" / "diysink_finetune.py"), "--model", model_path, "--data", eval_dir,
               "--output_dir", str(out), "--max_steps", "3", "--per_device_batch_size", "2", "--num_workers", "0",
               "--lr", "1e-2", "--warmup_ratio", "0"]
    ok(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")))
    return out / "checkpoints" / "step_000003"
