"""sinktrain.demo.cache.build_once: processes asking for the same artefact at once (two ranks, two
test workers) build it once, the others wait and get the finished directory; a build that fails
leaves nothing that looks built, and the next call builds it."""

import multiprocessing
import time
from pathlib import Path

import pytest

from sinktrain.demo.cache import build_once


def slow_build(log: Path):
    def build(out: Path) -> None:
        with log.open("a") as record:
            record.write("built\n")
        time.sleep(1.0)  # long enough for the other process to ask meanwhile
        out.mkdir()
        (out / "weights").write_text("same bytes")

    return build


def ask(target: str, log: str) -> str:
    return str(build_once(Path(target), slow_build(Path(log))))


def test_two_processes_at_once_build_once_and_both_get_the_result(tmp_path):
    target, log = tmp_path / "demo-x", tmp_path / "builds.log"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.starmap(ask, [(str(target), str(log))] * 2)
    assert results == [str(target)] * 2
    assert log.read_text() == "built\n" and (target / "weights").read_text() == "same bytes"


def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path):
    target = tmp_path / "demo-y"

    def broken(out: Path) -> None:
        out.mkdir()
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        build_once(target, broken)
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == [".demo-y.lock"]
    assert build_once(target, slow_build(tmp_path / "log")) == target and (target / "weights").is_file()
