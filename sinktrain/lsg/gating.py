"""LSG's gating as sinktrain trains it: the model-side gating (sinktrain.modeling.gating: gates on
chosen LLM layers, key scaling by hooks) with the layer and group choices checked first and the
gates born partitioned under ZeRO-3, starting neutral (every visual key scaled by exactly 1).
"""

from __future__ import annotations

from torch import nn

from sinktrain.backbones.base import Backbone
from sinktrain.errors import SinkTrainError
from sinktrain.modeling import gating
from sinktrain.modeling.gating import GATES_ATTRIBUTE
from sinktrain.train.zero import gathered, init_context

__all__ = ["GATES_ATTRIBUTE", "LayerGating", "check_groups", "check_layers"]


def check_layers(layers: list[int], num_layers: int) -> None:
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if not layers or bad:
        raise SinkTrainError(
            f"gate layers {bad or layers} are out of range: this LLM has {num_layers} decoder layers "
            f"(0..{num_layers - 1}); pick --layers within that range, e.g. --layers {num_layers // 3}"
        )


def check_groups(groups: int, backbone: Backbone) -> None:
    if groups not in (2, 3):
        raise SinkTrainError(f"--groups {groups}: use 2 (V-sinks / other visual) or 3 (V-sinks / L-sinks / ordinary)")
    profile = backbone.sink_profile
    if groups == 3 and not profile.llm_dims:
        raise SinkTrainError(
            f"--groups 3 needs LLM sink dims to find L-sinks, but sink profile {profile.name!r} has none; run "
            "tools/find_sink_dims.py on this model and pass --sink_profile, or use --groups 2"
        )


class LayerGating(gating.LayerGating):
    def __init__(self, backbone: Backbone, layers: list[int], groups: int = 2, scale_layout_slots: bool = False):
        check_layers(layers, len(backbone.decoder_layers()))
        check_groups(groups, backbone)
        super().__init__(backbone, layers, groups, scale_layout_slots)

    def new_gates(self) -> nn.ModuleDict:
        with init_context():
            gates = super().new_gates()
        for gate in gates.values():  # zero.Init partitioned them as they were built: edit gathered
            with gathered(gate.out.parameters(), modifier_rank=0):
                gate.make_neutral()
        return gates
