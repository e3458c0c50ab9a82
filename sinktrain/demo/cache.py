"""Where demo artefacts live, how they are built once, and what makes a build bitwise reproducible.

Every embedded artefact (tiny models, their trained variants, demo shards) is a pure function of
its seed and the installed software: two builds on the same versions give the same files, byte
for byte, whatever the machine's load and thread count. ``reproducible()`` pins what would
otherwise vary: the seeds of every generator, torch's intra-op thread count (a different split
of a matrix product sums in a different order, and float addition is not associative) and
deterministic algorithms. A build writes into a temporary sibling and is renamed into place, so
an interrupted build is simply redone and readers never see half of one; a file lock lets one
process build while the others wait.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from filelock import FileLock

DEMO_VERSION = 10  # bump when a demo model or the demo data change, so stale caches are rebuilt
BUILD_THREADS = 2  # a fixed count fixes how every kernel splits its work, hence the order of its sums


def cache_dir() -> Path:
    return Path(os.environ.get("SINKTRAIN_CACHE", Path.home() / ".cache" / "sinktrain"))


@contextlib.contextmanager
def reproducible(seed: int) -> Iterator[None]:
    """Seeded generators, one torch thread, deterministic kernels; everything restored on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    torch.set_num_threads(BUILD_THREADS)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a temporary sibling and rename it to ``target``; skip if present.
    One process builds, others asking meanwhile (ranks, test workers) wait for it on a file lock
    instead of building the same bytes again (a trained demo takes minutes)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.is_dir():  # built while this process waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(tmp / "out")
            os.replace(tmp / "out", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
