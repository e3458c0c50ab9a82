"""Load a DIYSink model from a DeepSpeed training checkpoint, for evaluation.

    backbone = load_backbone(model)                  # the model the run started from
    load_diysink_checkpoint(backbone, "runs/X/checkpoints/step_000100")

DeepSpeed's ``zero_to_fp32`` consolidates the (possibly ZeRO-3 partitioned) checkpoint into one
fp32 state dict, frozen parameters included. Its keys carry one ``model.`` prefix from
sinktrain's ``BatchForward`` wrapper; without it they are the backbone model's own keys once a
DualMLP connector is attached (``...multi_modal_projector.f_sink.*`` / ``f_non.*``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.errors import SinkTrainError

WRAPPER_PREFIX = "model."  # sinktrain.train.loop.BatchForward.model
CHECKPOINT_HINT = "pass one checkpoint directory of recipes/diysink_finetune.py, e.g. runs/NAME/checkpoints/step_000100"


def consolidated_state(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's full fp32 weights, keyed as in the backbone's model."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    path = Path(checkpoint_dir)
    if not path.is_dir() or not any(path.glob("*model_states.pt")):
        raise SinkTrainError(f"--diysink_checkpoint {path} is not a DeepSpeed checkpoint directory; {CHECKPOINT_HINT}")
    state = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
    return strip_prefix(state, WRAPPER_PREFIX)


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):] if name.startswith(prefix) else name: value for name, value in state.items()}


def check_keys(state: dict[str, torch.Tensor], expected: set[str], source: str) -> None:
    if not any(".f_sink." in name for name in state):
        raise SinkTrainError(f"{source} holds no DualMLP connector weights (f_sink.*): it is not a DIYSink run; {CHECKPOINT_HINT}")
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise SinkTrainError(
            f"{source} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); pass the --model "
            "the DIYSink run was trained from"
        )


def load_diysink_checkpoint(backbone: Backbone, checkpoint_dir: str | Path, sink_first: bool = True) -> None:
    """Attach a DualMLP connector to ``backbone`` and load the checkpoint's weights into the whole model.

    ``sink_first`` must match the run (``recipes/diysink_finetune.py --no_sink_first`` -> False):
    the token order is not a weight, so the checkpoint cannot say."""
    state = consolidated_state(checkpoint_dir)
    attach_dual_mlp(backbone, sink_first=sink_first)
    check_keys(state, set(backbone.model.state_dict()), str(checkpoint_dir))
    try:
        backbone.model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shapes: a run from a model of another size
        raise SinkTrainError(
            f"{checkpoint_dir} does not fit this model ({err}); pass the --model the DIYSink run was trained from"
        ) from err


def load_into_run(backbone: Backbone, checkpoint_dir: str | Path, is_main: bool) -> None:
    """A DIYSink checkpoint's weights into a run's backbone (DualMLP attached, maybe partitioned):
    rank 0 alone consolidates and checks it; every rank takes part in the load."""
    from sinktrain.train.run import on_main_first
    from sinktrain.train.zero import load_full_state

    expected = set(backbone.model.state_dict())

    def consolidate():
        if not is_main:
            return None
        state = consolidated_state(checkpoint_dir)
        check_keys(state, expected, str(checkpoint_dir))
        return state

    load_full_state(backbone.model, on_main_first(consolidate))
