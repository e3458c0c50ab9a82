"""Layer-wise Sink Gating on a backbone: gates on chosen LLM layers, key scaling by hooks.

Two hooks per gated layer on transformers' own modules, no copied modeling code:

* on the decoder layer (pre-forward): the hidden state entering the layer at the last prompt
  token goes through that layer's gate (or fixed coefficients, for the oracle sweep), giving each
  visual token's key scale for this forward;
* on that layer's attention ``k_proj`` (forward): its output is multiplied by the scale. RoPE is
  linear, so this equals scaling the post-RoPE key; at prefill the scaled keys go into the KV
  cache, and decoding steps (text tokens only) are left alone.

Where the image slots, V-sinks and the last prompt token are comes from the backbone's slot
state (sinktrain.backbones.slots), recorded by the same forward: training batches, evaluation
and ``generate()`` need no preparation. Gated are an image's patch slots; text keys keep scale 1,
and so do layout slots (LLaVA-OneVision's row newlines) unless ``scale_layout_slots``, which puts
them with the other (non-sink) visual tokens. V-sinks and L-sinks are patch slots either way.
"""

from __future__ import annotations

import torch
from torch import nn

from sinktrain.backbones.base import Backbone
from sinktrain.backbones.slots import SlotState
from sinktrain.errors import SinkTrainError
from sinktrain.lsg.gate import SinkGate
from sinktrain.lsg.keys import key_scale, three_groups, visual_groups
from sinktrain.sinks import l_sink_mask
from sinktrain.train.zero import init_context

GATES_ATTRIBUTE = "sink_gates"  # where the gates live in the model, so checkpoints include them


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


class LayerGating:
    def __init__(self, backbone: Backbone, layers: list[int], groups: int = 2, scale_layout_slots: bool = False):
        num_layers = len(backbone.decoder_layers())
        check_layers(layers, num_layers)
        check_groups(groups, backbone)
        self.backbone, self.layers, self.groups = backbone, sorted(set(layers)), groups
        self.scale_layout_slots = scale_layout_slots
        with init_context():
            self.gates = nn.ModuleDict({str(layer): SinkGate(backbone.llm_width, groups) for layer in self.layers})
        setattr(backbone.model, GATES_ATTRIBUTE, self.gates)
        self.fixed: dict[int, torch.Tensor] = {}  # layer -> (G,) or (B, G) coefficients replacing the gate
        self.scales: dict[int, torch.Tensor | None] = {}
        self.last_ratios: dict[int, torch.Tensor] = {}  # layer -> (B, G) r of the last forward
        self._two_groups: tuple[SlotState, torch.Tensor] | None = None  # computed once per forward
        self.handles = self._register()

    # -- hooks -----------------------------------------------------------------------------
    def _register(self) -> list:
        handles = []
        for layer in self.layers:
            decoder = self.backbone.decoder_layers()[layer]
            handles.append(decoder.register_forward_pre_hook(self._gate_hook(layer), with_kwargs=True))
            handles.append(decoder.self_attn.k_proj.register_forward_hook(self._scale_hook(layer)))
        return handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _gate_hook(self, layer: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.scales[layer] = self._scale_for(layer, hidden)

        return hook

    def _scale_hook(self, layer: int):
        def hook(module, args, output):
            scale = self.scales.get(layer)
            if scale is None or scale.shape[1] != output.shape[1]:
                return output  # decoding step: only text keys, unscaled
            return output * scale.unsqueeze(-1).to(output.dtype)

        return hook

    # -- the scale of every key at one layer ----------------------------------------------
    def _scale_for(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        tracker = self.backbone.slots
        if tracker.decoding:
            return None  # a decoding step after the prefill: its keys are text
        state = tracker.require()
        if hidden.shape[1] != state.length:
            raise SinkTrainError(f"layer {layer} sees {hidden.shape[1]} positions but the forward's slot state has {state.length}")
        return key_scale(self._groups_at(hidden, state), self._coefficients(layer, hidden, state))

    def _two_group_ids(self, state: SlotState) -> torch.Tensor:
        if self._two_groups is None or self._two_groups[0] is not state:
            scaled = state.visual if self.scale_layout_slots else state.patch
            self._two_groups = (state, visual_groups(scaled, state.sink_mask()))
        return self._two_groups[1]

    def _groups_at(self, hidden: torch.Tensor, state: SlotState) -> torch.Tensor:
        groups = self._two_group_ids(state)
        if self.groups == 2:
            return groups
        profile = self.backbone.sink_profile  # L-sinks differ per layer: only this split is redone
        l_sinks = l_sink_mask(hidden, state.patch, state.sink_mask(), profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
        return three_groups(groups, l_sinks)

    def _coefficients(self, layer: int, hidden: torch.Tensor, state: SlotState) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, state.last_prompt_index.to(hidden.device)]
        ratios = self.gates[str(layer)].ratios(last)  # every rank runs every gate every step (ZeRO-3)
        self.last_ratios[layer] = ratios.detach()
        if layer in self.fixed:
            return self.fixed[layer].to(hidden.device).expand(hidden.shape[0], -1) + 0.0 * ratios
        return self.groups * ratios
