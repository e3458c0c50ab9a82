"""Resuming on another number of ranks: DeepSpeed's universal checkpoint.

ZeRO keeps each rank's slice of the weights and the Adam moments in that rank's file, so a
checkpoint of N ranks does not load on M. DeepSpeed's own converter (ds_to_universal) rewrites it
as one full tensor per parameter (fp32 weights, exp_avg, exp_avg_sq) plus the optimizer step, and
an engine with ``"checkpoint": {"load_universal": true}`` loads that on any number of ranks. sinktrain
converts on rank 0 when a resume finds another number of ranks, into
``{output_dir}/universal/step_NNNNNN`` (built beside it, renamed when complete, reused by later
resumes), and loads from there. By hand: ``python -m deepspeed.checkpoint.ds_to_universal
--input_folder RUN/checkpoints/step_NNNNNN --output_folder OUT``.

Only what the optimizer trains is converted: frozen weights come from the model as loaded (as on
every resume). The data order is exact (sinktrain.data.stream), and so is the step's gradient as
a sum of the same micro-batches; on CPU (gloo, fp32) a 2 -> 1 -> 2 resume ends bit for bit equal to
the uninterrupted run (tests/train/test_elastic_resume.py). GPU collectives may sum in another
order on another number of ranks: there expect equality to float rounding, not bits.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
from pathlib import Path

from sinktrain.errors import SinkTrainError

logger = logging.getLogger("sinktrain")
UNIVERSAL_DIR = "universal"
UNIVERSAL_TAG = "checkpoint"  # the tag directory inside each converted step


def universal_root(output_dir: Path, tag: str) -> Path:
    return output_dir / UNIVERSAL_DIR / tag


def convert_to_universal(root: Path, tag: str, output_dir: Path) -> Path:
    """The universal form of checkpoint ``root/tag`` (converted once; a crash leaves no partial one)."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    target = universal_root(output_dir, tag)
    if target.is_dir():
        return target
    staging = target.with_name(f".tmp-{tag}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    logger.info("converting %s to DeepSpeed's universal checkpoint for another number of ranks", root / tag)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its progress
            ds_to_universal(argparse.Namespace(
                input_folder=str(root / tag), output_folder=str(staging / UNIVERSAL_TAG), num_extract_workers=1,
                num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=False,
            ))
    except Exception as error:  # DeepSpeed's converter raises bare assertions and KeyErrors
        shutil.rmtree(staging, ignore_errors=True)
        raise SinkTrainError(
            f"DeepSpeed could not convert {root / tag} to a universal checkpoint ({type(error).__name__}: {error}); "
            "resume on the number of ranks that wrote it"
        ) from error
    os.replace(staging, target)
    return target


def enable_universal_loading(ds_config: dict) -> None:
    ds_config.setdefault("checkpoint", {})["load_universal"] = True
