"""What benchmark scripts record besides their ratios: the machine they ran on, and the JSON file.

Ratios from a loaded machine mean little, so every report carries the load average before and
after the run next to the versions and the CPU count.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
import transformers


def environment(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict:
    return {
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": [load_before[0], load_after[0]],
        "platform": platform.platform(),
    }


def report_head(args, load_before: tuple[float, ...], load_after: tuple[float, ...], parameters: int) -> dict:
    """What every benchmark report starts with: the family, the flags, the machine, the model size."""
    return {
        "family": args.family,
        "config": {key: value for key, value in vars(args).items() if key != "json"},
        "environment": environment(load_before, load_after),
        "parameters": parameters,
    }


def write_report(path: str, report: dict) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
