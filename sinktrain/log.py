"""One logger for the whole package; rank 0 prints by default, other ranks only warnings."""

from __future__ import annotations

import logging
import os
import sys
import warnings


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


# DeepSpeed's learning-rate schedulers ask themselves for a rate inside their own constructor and
# warn that they have not started yet: once per rank per run, whatever the user does
DEEPSPEED_FALSE_ALARMS = ("Attempting to get learning rate from scheduler before it has started",)


class DropMessages(logging.Filter):
    def __init__(self, messages: tuple[str, ...]):
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(message in record.getMessage() for message in self.messages)


def quiet_third_party() -> None:
    """Keep the console to sinktrain's own lines and real problems: DeepSpeed calls collectives that
    torch marks deprecated (a FutureWarning per call site on every rank), its schedulers raise a
    false alarm, and transformers draws a progress bar for every model it loads."""
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    deepspeed_logger = logging.getLogger("DeepSpeed")  # the one DeepSpeed configures when imported
    if not any(isinstance(f, DropMessages) for f in deepspeed_logger.filters):
        deepspeed_logger.addFilter(DropMessages(DEEPSPEED_FALSE_ALARMS))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
