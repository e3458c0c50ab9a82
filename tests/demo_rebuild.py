"""The second demo build of tests/demo/test_reproducible.py, run beside the rest of the suite.

Rebuilding every demo artefact takes minutes of mostly single-threaded work; started when the
suite starts (only if the reproducibility test was collected) it overlaps the other tests, and
it builds under their load, which is what the test means to show: the bytes do not depend on
it. The check itself runs last, when the session's own cache holds every artefact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TEST_NAME = "test_two_builds_give_the_same_bytes"
ROOT = Path(__file__).resolve().parents[1]
KEY = pytest.StashKey["Rebuild"]()


class Rebuild:
    """``python -m sinktrain.demo`` into a fresh cache, on another OpenMP thread count."""

    def __init__(self):
        self.cache = Path(tempfile.mkdtemp(prefix="sinktrain-rebuild-"))
        self.log = self.cache.parent / f"{self.cache.name}.log"
        env = dict(os.environ, SINKTRAIN_CACHE=str(self.cache), OMP_NUM_THREADS="2" if os.cpu_count() == 1 else "1")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "sinktrain.demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> tuple[int, str]:
        """(return code, the tail of its output)."""
        code = self.process.wait(timeout=timeout)
        return code, self.log.read_text()[-2000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.cache, ignore_errors=True)
        self.log.unlink(missing_ok=True)


def start_if_collected(session) -> None:
    if not session.config.option.collectonly and any(item.name == TEST_NAME for item in session.items):
        session.config.stash[KEY] = Rebuild()


def move_last(items: list) -> None:
    chosen = [item for item in items if item.name == TEST_NAME]
    for item in chosen:
        items.remove(item)
        items.append(item)


def close(config) -> None:
    rebuild = config.stash.get(KEY, None)
    if rebuild is not None:
        rebuild.close()
