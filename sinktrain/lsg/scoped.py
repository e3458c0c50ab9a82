"""Gates put on a backbone for one evaluation and taken off again, so one loaded model serves many.

    with scoped_gating(backbone, [layer]) as gating:        # oracle sweep: fixed coefficients
        gating.fixed[layer] = torch.tensor([c_sink, 2 - c_sink])
        results = evaluate(backbone, samples, gating)
    with scoped_gating(backbone, meta.layers, meta.groups, state) as gating:   # stacked gates
        ...

On exit the hooks are removed and the gates leave the model (no ``sink_gates`` submodule): the
backbone is the stock model again.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from sinktrain.backbones.base import Backbone
from sinktrain.lsg.gate_file import load_into
from sinktrain.lsg.gating import GATES_ATTRIBUTE, LayerGating


def to_model_device(gating: LayerGating) -> LayerGating:
    """Gates are born on the CPU in fp32; run them where the model is (their dtype stays fp32)."""
    gating.gates.to(next(gating.backbone.model.parameters()).device)
    return gating


@contextmanager
def scoped_gating(
    backbone: Backbone, layers: list[int], groups: int = 2, state: dict[str, torch.Tensor] | None = None, scale_layout_slots: bool = False
) -> Iterator[LayerGating]:
    gating = LayerGating(backbone, layers, groups, scale_layout_slots)
    try:
        if state is not None:
            load_into(gating, state)
        yield to_model_device(gating)
    finally:
        gating.remove()
        delattr(backbone.model, GATES_ATTRIBUTE)
