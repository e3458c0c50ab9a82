"""Layer-wise Sink Gating on a slotted model: gates on chosen LLM layers, key scaling by hooks.

Two hooks per gated layer on transformers' own modules, no copied modeling code:

* on the decoder layer (pre-forward): the hidden state entering the layer at the last prompt
  token goes through that layer's gate (or fixed coefficients, for the oracle sweep), giving each
  visual token's key scale for this forward;
* on that layer's attention ``k_proj`` (forward): its output is multiplied by the scale. RoPE is
  linear, so this equals scaling the post-RoPE key; at prefill the scaled keys go into the KV
  cache, and decoding steps (text tokens only) are left alone.

Where the image slots, V-sinks and the last prompt token are comes from the model's slot
state (slots.py), recorded by the same forward: training batches, evaluation
and ``generate()`` need no preparation. Gated are an image's patch slots; text keys keep scale 1,
and so do layout slots (LLaVA-OneVision's row newlines) unless ``scale_layout_slots``, which puts
them with the other (non-sink) visual tokens. V-sinks and L-sinks are patch slots either way.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import SinkTrainError
from .gate import SinkGate
from .keys import key_scale, three_groups, visual_groups
from .sinks import l_sink_mask
from .slots import SlotState
from .slotted import SlottedModel

GATES_ATTRIBUTE = "sink_gates"  # where the gates live in the model, so checkpoints include them


class LayerGating:
    def __init__(self, backbone: SlottedModel, layers: list[int], groups: int = 2, scale_layout_slots: bool = False):
        self.backbone, self.layers, self.groups = backbone, sorted(set(layers)), groups
        self.scale_layout_slots = scale_layout_slots
        self.gates = self.new_gates()
        setattr(backbone.model, GATES_ATTRIBUTE, self.gates)
        backbone.gating = self  # what the model carries (run records and exports describe it)
        self.fixed: dict[int, torch.Tensor] = {}  # layer -> (G,) or (B, G) coefficients replacing the gate
        self.scales: dict[int, torch.Tensor | None] = {}
        self.last_ratios: dict[int, torch.Tensor] = {}  # layer -> (B, G) r of the last forward
        self._two_groups: tuple[SlotState, torch.Tensor] | None = None  # computed once per forward
        self.handles = self._register()

    def new_gates(self) -> nn.ModuleDict:
        """One neutral gate per layer (sinktrain.lsg.gating builds them partitioned under ZeRO-3)."""
        return nn.ModuleDict({str(layer): SinkGate(self.backbone.llm_width, self.groups) for layer in self.layers})

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
