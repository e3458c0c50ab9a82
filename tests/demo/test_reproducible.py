"""Every embedded demo artefact is bitwise reproducible from its seed, whatever the thread count.

The session's cache is built in this process (the fixtures of the other tests, torch's default
thread count); a second cache is built here by ``python -m sinktrain.demo`` in a fresh process
with another OpenMP thread count. Both must hold the same files with the same bytes: demo
models, the trained demo model (450 optimizer steps), training and eval shards.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinktrain import demo

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.multiprocess


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def test_two_builds_give_the_same_bytes(tmp_path):
    # In this process, with torch's default threads (built already if other tests ran first).
    built_here = [demo.ensure_demo_model(), demo.ensure_demo_trained_model(), demo.ensure_demo_shards(), Path(demo.demo_eval_pattern()).parent]
    env = dict(os.environ, SINKTRAIN_CACHE=str(tmp_path), OMP_NUM_THREADS="2" if os.cpu_count() == 1 else "1")
    done = subprocess.run([sys.executable, "-m", "sinktrain.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)  # ~3 min idle; 10 min next to two busy processes
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rebuilt = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert rebuilt == sorted(p.name for p in built_here)
    for original in built_here:
        first, second = digests(original), digests(tmp_path / original.name)
        assert first and first.keys() == second.keys(), original.name
        differing = [name for name in first if first[name] != second[name]]
        assert not differing, f"{original.name}: {differing}"
