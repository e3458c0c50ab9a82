"""The weights of one checkpoint of a run, consolidated offline on CPU by DeepSpeed's own
``zero_to_fp32`` (no GPU, no process group, any number of ranks that wrote it).

    tag = pick_checkpoint(run_dir, step=None)        # "step_000100": the latest, or --step N
    state = checkpoint_weights(run_dir, tag)          # {key of the trained HF model: fp32 tensor}
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch

from sinktrain.diysink.checkpoint import consolidated_state
from sinktrain.errors import SinkTrainError
from sinktrain.train import checkpoint

CHECKPOINTS = "checkpoints"
KNOWN_DEEPSPEED = (0, 16)  # the oldest DeepSpeed whose ZeRO checkpoints this reads (pyproject's pin)


def available_steps(root: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("step_")) for p in root.glob("step_*") if (p / checkpoint.STATE_FILE).is_file())


def pick_checkpoint(run_dir: Path, step: int | None = None) -> str:
    """The tag of the checkpoint to convert: ``step``'s, else the run's latest complete one."""
    root = Path(run_dir) / CHECKPOINTS
    steps = available_steps(root) if root.is_dir() else []
    if not steps:
        raise SinkTrainError(f"{run_dir} holds no checkpoint ({root}/step_*): train with --save_every N (or let it finish) first")
    if step is None:
        tag = checkpoint.latest(root)
        return tag if tag and (root / tag / checkpoint.STATE_FILE).is_file() else checkpoint.step_tag(steps[-1])
    if step not in steps:
        raise SinkTrainError(f"--step {step}: {run_dir} has checkpoints at steps {steps}; pick one of them")
    return checkpoint.step_tag(step)


def check_format(directory: Path) -> None:
    """A DeepSpeed ZeRO checkpoint this DeepSpeed can read: model and optimizer states of every rank."""
    models = sorted(directory.glob("*_model_states.pt"))
    if not models:
        raise SinkTrainError(f"{directory} holds no DeepSpeed model states (*_model_states.pt): not a sinktrain checkpoint")
    header = torch.load(models[0], map_location="cpu", weights_only=False, mmap=True)
    version = str(header.get("ds_version", "")) if isinstance(header, dict) else ""
    parts = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if len(parts) != 2 or parts < KNOWN_DEEPSPEED:
        raise SinkTrainError(f"{directory} was written by DeepSpeed {version or 'of unknown version'}; this converter reads DeepSpeed >= 0.16 ZeRO checkpoints")
    if "param_shapes" not in header:
        raise SinkTrainError(f"{directory}: {models[0].name} is not in a ZeRO checkpoint format this converter knows (no param_shapes)")
    import deepspeed

    if tuple(int(p) for p in deepspeed.__version__.split(".")[:2]) < parts:
        raise SinkTrainError(f"{directory} was written by DeepSpeed {version}, newer than the installed {deepspeed.__version__}; upgrade deepspeed")


def checkpoint_weights(run_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    """Every parameter of the trained model (frozen ones included), keyed as in the HF model."""
    directory = Path(run_dir) / CHECKPOINTS / tag
    check_format(directory)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its progress lines and bars
        try:
            return consolidated_state(directory)
        except (ValueError, FileNotFoundError, KeyError) as err:
            raise SinkTrainError(f"{directory} is incomplete or damaged ({err}); convert another --step") from err


def trainer_state(run_dir: Path, tag: str) -> dict:
    return json.loads((Path(run_dir) / CHECKPOINTS / tag / checkpoint.STATE_FILE).read_text())
