"""Atomic checkpoints: a crash while saving never touches the last good one.

Layout under ``{output_dir}/checkpoints``::

    step_000030/          one complete checkpoint (DeepSpeed's files + trainer_state.json)
    step_000060/
    latest                the tag of the newest complete checkpoint (written last, atomically)

A checkpoint is written into a hidden ``.tmp-step_...`` directory, renamed to its tag only when
complete, and only then does ``latest`` move to it; old checkpoints are pruned after that.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from sinktrain.errors import SinkTrainError

logger = logging.getLogger("sinktrain")

LATEST = "latest"
STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"


def step_tag(step: int) -> str:
    return f"step_{step:06d}"


def replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` into a hidden sibling, then rename it onto ``path``: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def commit(root: Path, tag: str, state: dict[str, Any], keep: int) -> Path:
    """Rank 0, after every rank wrote into ``root/.tmp-{tag}``: finish, publish, prune."""
    staging, final = root / f"{TMP_PREFIX}{tag}", root / tag
    write_atomically(staging / STATE_FILE, json.dumps(state, indent=2))
    if final.exists():  # a checkpoint of the same step from an earlier, crashed attempt
        shutil.rmtree(final)
    os.replace(staging, final)
    write_atomically(root / LATEST, tag)
    prune(root, keep)
    return final


def prune(root: Path, keep: int) -> None:
    tags = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for tag in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(root / tag, ignore_errors=True)
    for leftover in root.glob(f"{TMP_PREFIX}*"):  # staging dirs of crashed saves
        shutil.rmtree(leftover, ignore_errors=True)


def save(root: Path, step: int, write: Callable[[Path, str], None], state: dict[str, Any], keep: int, is_main: bool, barrier: Callable[[], None]) -> Path:
    """``write(root, staging_tag)`` runs on every rank (DeepSpeed's collective save)."""
    root.mkdir(parents=True, exist_ok=True)
    tag = step_tag(step)
    write(root, f"{TMP_PREFIX}{tag}")
    barrier()
    if is_main:
        commit(root, tag, state, keep)
    barrier()
    return root / tag


def complete_tags(root: Path) -> list[str]:
    """Tags of the published checkpoints, oldest first (a directory gets its tag only when complete)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith("step_") and (p / STATE_FILE).is_file())


def latest(root: Path) -> str | None:
    """The newest complete checkpoint. ``latest`` names it; where that file is missing, damaged or
    behind (a crash between publishing a checkpoint and moving ``latest``), the directories decide,
    and a warning says so."""
    marker = root / LATEST
    try:
        named = marker.read_text().strip() if marker.is_file() else None
    except (OSError, UnicodeDecodeError):
        named = "(unreadable)"
    tags = complete_tags(root)
    newest = tags[-1] if tags else None
    if named != newest and (named is not None or newest is not None):
        problem = "is missing" if named is None else f"names {named!r}, which is not the newest complete checkpoint"
        logger.warning("%s %s; using %s", marker, problem, newest or "none: starting fresh")
    return newest


def resolve_resume(resume: str | None, output_dir: Path) -> tuple[Path, str] | None:
    """``--resume auto`` -> the latest checkpoint in output_dir (None on a fresh dir); a path -> it."""
    if resume is None:
        return None
    if resume == "auto":
        root = output_dir / "checkpoints"
        tag = latest(root)
        return (root, tag) if tag else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise SinkTrainError(
            f"--resume {resume}: not a sinktrain checkpoint (no {STATE_FILE}); pass a "
            f"checkpoints/step_NNNNNN directory or 'auto'"
        )
    return path.parent, path.name


def read_state(root: Path, tag: str) -> dict[str, Any]:
    return json.loads((root / tag / STATE_FILE).read_text())
