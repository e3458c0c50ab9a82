"""Every embedded demo artefact is bitwise reproducible from its seed, whatever the thread count.

The session's cache is built in this process (the fixtures of the other tests, torch's default
thread count); a second cache is built here by ``python -m sinktrain.demo`` in a fresh process
with another OpenMP thread count. Both must hold the same files with the same bytes: every
family's demo model, the trained demo LLaVA (450 optimizer steps), training and eval shards.

The trained Qwen2-VL and Qwen2.5-VL demo models are built by the same code
(``sinktrain.demo.trained``, under ``reproducible``) and are not rebuilt here: two more minutes
each would push the suite past CI's time budget. ``python -m sinktrain.demo`` into a second
cache and comparing the hashes checks them by hand (done for both, idle against a machine
loaded ~2x its cores).
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinktrain import demo

ROOT = Path(__file__).resolve().parents[2]
REBUILT_TRAINED = ["llava"]
pytestmark = pytest.mark.multiprocess


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def test_two_builds_give_the_same_bytes(tmp_path):
    # In this process, with torch's default threads (built already if other tests ran first).
    models = [demo.ensure_demo_model(name) for name in demo.BUILDERS]
    trained = [demo.ensure_demo_trained_model(name) for name in REBUILT_TRAINED]
    built_here = [*models, *trained, demo.ensure_demo_shards(), Path(demo.demo_eval_pattern()).parent]
    env = dict(os.environ, SINKTRAIN_CACHE=str(tmp_path), OMP_NUM_THREADS="2" if os.cpu_count() == 1 else "1")
    command = [sys.executable, "-m", "sinktrain.demo", "--trained", *REBUILT_TRAINED]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)  # ~3 min idle
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rebuilt = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert rebuilt == sorted(p.name for p in built_here)
    for original in built_here:
        first, second = digests(original), digests(tmp_path / original.name)
        assert first and first.keys() == second.keys(), original.name
        differing = [name for name in first if first[name] != second[name]]
        assert not differing, f"{original.name}: {differing}"
