"""Atomic checkpoints: a crash while saving leaves the last good checkpoint and `latest` intact."""

import json

import pytest

from sinktrain.errors import SinkTrainError
from sinktrain.train import checkpoint


def write_files(content: str):
    def write(root, tag):
        (root / tag).mkdir(parents=True, exist_ok=True)
        (root / tag / "weights.pt").write_text(content)

    return write


def crash_midway(root, tag):
    (root / tag).mkdir(parents=True, exist_ok=True)
    (root / tag / "weights.pt").write_text("half")
    raise RuntimeError("killed while writing")


def save(root, step, write, keep=2):
    return checkpoint.save(root, step, write, {"step": step}, keep, is_main=True, barrier=lambda: None)


def test_save_publishes_and_prunes(tmp_path):
    for step in (10, 20, 30):
        save(tmp_path, step, write_files(f"w{step}"))
    assert checkpoint.latest(tmp_path) == "step_000030"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["step_000020", "step_000030"]
    assert checkpoint.read_state(tmp_path, "step_000030") == {"step": 30}


def test_crash_during_save_keeps_previous_checkpoint(tmp_path):
    save(tmp_path, 10, write_files("good"))
    with pytest.raises(RuntimeError):
        save(tmp_path, 20, crash_midway)
    assert checkpoint.latest(tmp_path) == "step_000010"
    assert (tmp_path / "step_000010" / "weights.pt").read_text() == "good"
    assert not (tmp_path / "step_000020").exists()  # the half-written one never got its tag
    assert checkpoint.resolve_resume("auto", tmp_path.parent / "x") is None
    # the next successful save cleans up the crashed staging directory
    save(tmp_path, 20, write_files("better"))
    assert checkpoint.latest(tmp_path) == "step_000020"
    assert not list(tmp_path.glob(".tmp-*"))


def test_resume_auto_and_explicit(tmp_path):
    root = tmp_path / "checkpoints"
    assert checkpoint.resolve_resume("auto", tmp_path) is None
    save(root, 5, write_files("w"))
    assert checkpoint.resolve_resume("auto", tmp_path) == (root, "step_000005")
    assert checkpoint.resolve_resume(str(root / "step_000005"), tmp_path) == (root, "step_000005")
    with pytest.raises(SinkTrainError, match="not a sinktrain checkpoint"):
        checkpoint.resolve_resume(str(tmp_path), tmp_path)


def test_state_file_is_complete_json(tmp_path):
    save(tmp_path, 1, write_files("w"))
    assert json.loads((tmp_path / "step_000001" / checkpoint.STATE_FILE).read_text())["step"] == 1


@pytest.mark.parametrize("damage", ["missing", "garbage", "stale", "gone"])
def test_a_missing_or_damaged_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path, damage, sinktrain_warnings):
    root = tmp_path / "checkpoints"
    for step in (10, 20):
        save(root, step, write_files(f"w{step}"))
    (root / ".tmp-step_000030").mkdir()  # a save killed midway: never a candidate
    marker = root / checkpoint.LATEST
    if damage == "missing":
        marker.unlink()
    elif damage == "garbage":
        marker.write_bytes(b"\xff\xfe\x00junk")
    elif damage == "stale":  # killed after publishing step 20, before moving latest
        marker.write_text("step_000010")
    else:
        marker.write_text("step_000040")
    assert checkpoint.resolve_resume("auto", tmp_path) == (root, "step_000020")
    warned = " ".join(r.getMessage() for r in sinktrain_warnings.records)
    assert str(marker) in warned and "using step_000020" in warned


def test_latest_that_agrees_is_silent_and_no_checkpoint_is_none(tmp_path, sinktrain_warnings):
    save(tmp_path, 10, write_files("w"))
    assert checkpoint.latest(tmp_path) == "step_000010" and checkpoint.latest(tmp_path / "none") is None
    assert not sinktrain_warnings.records
