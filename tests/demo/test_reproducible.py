"""Every embedded demo artefact is bitwise reproducible from its seed, whatever the thread count and load.

The session's cache is built in this process (the fixtures of the other tests, torch's default
thread count); a second cache is built by ``python -m sinktrain.demo`` in a fresh process with
another OpenMP thread count, started with the session and running beside the other tests
(tests/demo_rebuild.py), so it builds under their load. Both must hold the same files with the
same bytes: every family's demo model and trained demo model (450 optimizer steps each),
training and eval shards.
"""

import hashlib
from pathlib import Path

import pytest

from sinktrain import demo

from demo_rebuild import KEY

pytestmark = pytest.mark.multiprocess
REBUILD_TIMEOUT = 3600  # ~7 min alone on an idle 2-core machine; it mostly overlaps the suite


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def test_two_builds_give_the_same_bytes(request):
    # In this process, with torch's default threads (built already by the tests that use them).
    models = [build(name) for name in demo.BUILDERS for build in (demo.ensure_demo_model, demo.ensure_demo_trained_model)]
    built_here = [*models, demo.ensure_demo_shards(), Path(demo.demo_eval_pattern()).parent]
    rebuild = request.config.stash[KEY]
    code, output = rebuild.wait(REBUILD_TIMEOUT)
    assert code == 0, output
    rebuilt = sorted(p.name for p in rebuild.cache.iterdir() if not p.name.startswith("."))
    assert rebuilt == sorted(p.name for p in built_here)
    for original in built_here:
        first, second = digests(original), digests(rebuild.cache / original.name)
        assert first and first.keys() == second.keys(), original.name
        differing = [name for name in first if first[name] != second[name]]
        assert not differing, f"{original.name}: {differing}"
