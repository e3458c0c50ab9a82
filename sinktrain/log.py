"""One logger for the whole package; rank 0 prints by default, other ranks only warnings."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(rank: int | None = None) -> logging.Logger:
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    logger = logging.getLogger("sinktrain")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    prefix = f"[rank {rank}] " if rank else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    return logger
