"""An export directory appears complete or not at all.

    with staged_output(Path("hf/NAME"), overwrite=False) as staging:
        write everything into staging
    # now hf/NAME is the finished export; a crash inside the block leaves no hf/NAME

Files are written into a hidden sibling (``.NAME.partial-PID``) that is renamed onto the final
name once complete; with ``overwrite`` the old export is swapped out only then. A killed export
leaves only the hidden sibling, which the next export of that name removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from sinktrain.errors import SinkTrainError


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise SinkTrainError(f"{out} already exists; pass --overwrite to replace it (it is replaced only once the new export is complete)")
    if out.exists() and not out.is_dir():
        raise SinkTrainError(f"{out} is a file, not an export directory; choose another --out")


@contextlib.contextmanager
def staged_output(out: Path, overwrite: bool):
    out = Path(out)
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(f".{out.name}.partial-*"):  # of killed exports
        shutil.rmtree(leftover, ignore_errors=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
