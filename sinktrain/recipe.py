"""Shared entry-point behaviour for recipes and tools: user errors print cleanly and exit 2, and
third-party noise stays off the console."""

from __future__ import annotations

import sys

from sinktrain.errors import SinkTrainError
from sinktrain.log import quiet_third_party


def main_guard(main) -> None:
    quiet_third_party()
    try:
        main()
    except SinkTrainError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        shutdown_distributed()


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
