"""Layer-wise Sink Gating on a backbone: gates on chosen LLM layers, key scaling by hooks.

Three hooks on transformers' own modules, no copied modeling code:

* on the connector (pre-forward): its input is the vision features, so the V-sink mask of every
  image is read there;
* on each gated decoder layer (pre-forward): the hidden state entering the layer at the last
  prompt token goes through that layer's gate (or fixed coefficients, for the oracle sweep),
  giving each visual token's key scale for this forward;
* on that layer's attention ``k_proj`` (forward): its output is multiplied by the scale. RoPE is
  linear, so this equals scaling the post-RoPE key; at prefill the scaled keys go into the KV
  cache, and decoding steps (text tokens only) are left alone.

Before each forward, ``prepare(input_ids, last_prompt_index)`` says where the image tokens and
the last prompt token are; the backbone's ``forward(batch)`` calls it through a batch hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sinktrain.backbones.base import Backbone
from sinktrain.errors import SinkTrainError
from sinktrain.lsg.gate import SinkGate
from sinktrain.lsg.keys import key_scale, three_groups, visual_groups
from sinktrain.sinks import l_sink_mask, v_sink_mask
from sinktrain.train.zero import init_context

GATES_ATTRIBUTE = "sink_gates"  # where the gates live in the model, so checkpoints include them


@dataclass
class Prepared:
    visual: torch.Tensor  # (B, T) image-token positions
    last_prompt_index: torch.Tensor  # (B,)
    v_sinks: torch.Tensor  # (B, T), set when the connector runs (none before)
    groups: torch.Tensor  # (B, T) 2-group ids, computed once per forward, not per gated layer

    @classmethod
    def without_sinks(cls, visual: torch.Tensor, last_prompt_index: torch.Tensor) -> "Prepared":
        v_sinks = torch.zeros_like(visual)
        return cls(visual, last_prompt_index, v_sinks, visual_groups(visual, v_sinks))

    def set_v_sinks(self, v_sinks: torch.Tensor) -> None:
        self.v_sinks, self.groups = v_sinks, visual_groups(self.visual, v_sinks)


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
    def __init__(self, backbone: Backbone, layers: list[int], groups: int = 2):
        num_layers = len(backbone.decoder_layers())
        check_layers(layers, num_layers)
        check_groups(groups, backbone)
        self.backbone, self.layers, self.groups = backbone, sorted(set(layers)), groups
        hidden = backbone.model.config.text_config.hidden_size
        with init_context():
            self.gates = nn.ModuleDict({str(layer): SinkGate(hidden, groups) for layer in self.layers})
        setattr(backbone.model, GATES_ATTRIBUTE, self.gates)
        self.fixed: dict[int, torch.Tensor] = {}  # layer -> (G,) coefficients replacing the gate
        self.prepared: Prepared | None = None
        self.scales: dict[int, torch.Tensor | None] = {}
        self.last_ratios: dict[int, torch.Tensor] = {}  # layer -> (B, G) r of the last forward
        self.handles = self._register()
        backbone.batch_hooks.append(lambda batch: self.prepare(batch.input_ids, batch.last_prompt_index))

    # -- hooks -----------------------------------------------------------------------------
    def _register(self) -> list:
        handles = [self.backbone.connector.register_forward_pre_hook(self._read_v_sinks)]
        for layer in self.layers:
            decoder = self.backbone.decoder_layers()[layer]
            handles.append(decoder.register_forward_pre_hook(self._gate_hook(layer), with_kwargs=True))
            handles.append(decoder.self_attn.k_proj.register_forward_hook(self._scale_hook(layer)))
        return handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def prepare(self, input_ids: torch.Tensor, last_prompt_index: torch.Tensor | None = None) -> None:
        """Call before a forward or ``generate``; default last prompt token: the last position
        (generation prompts are left-padded, so that is every row's last prefill token)."""
        if last_prompt_index is None:
            last_prompt_index = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        self.prepared = Prepared.without_sinks(input_ids == self.backbone.image_token_id, last_prompt_index.to(input_ids.device))

    def _read_v_sinks(self, module, args) -> None:
        prepared = self._require_prepared()
        profile = self.backbone.sink_profile
        per_image = v_sink_mask(args[0], profile.criterion, profile.tau_v, profile.vit_dims)
        with_images = prepared.visual.any(dim=1)
        if per_image.shape[0] == prepared.visual.shape[0]:  # sinktrain's path: text-only rows carry a blank image
            per_image = per_image[with_images]
        v_sinks = torch.zeros_like(prepared.visual)
        v_sinks[prepared.visual] = per_image.reshape(-1).to(v_sinks.device)
        prepared.set_v_sinks(v_sinks)

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
    def _require_prepared(self) -> Prepared:
        if self.prepared is None:
            raise SinkTrainError("LayerGating.prepare(input_ids, last_prompt_index) must be called before the forward")
        return self.prepared

    def _scale_for(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        prepared = self._require_prepared()
        if hidden.shape[1] != prepared.visual.shape[1]:
            return None  # a decoding step after the prefill this was prepared for
        groups = self._groups_at(hidden, prepared)
        coefficients = self._coefficients(layer, hidden, prepared)
        return key_scale(groups, coefficients)

    def _groups_at(self, hidden: torch.Tensor, prepared: Prepared) -> torch.Tensor:
        if self.groups == 2:
            return prepared.groups
        profile = self.backbone.sink_profile  # L-sinks differ per layer: only this split is redone
        l_sinks = l_sink_mask(hidden, prepared.visual, prepared.v_sinks, profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
        return three_groups(prepared.groups, l_sinks)

    def _coefficients(self, layer: int, hidden: torch.Tensor, prepared: Prepared) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, prepared.last_prompt_index]
        gate = self.gates[str(layer)]
        ratios = gate.ratios(last)  # every rank runs every gate every step (ZeRO-3)
        self.last_ratios[layer] = ratios.detach()
        if layer in self.fixed:
            return self.fixed[layer].to(hidden.device).expand(hidden.shape[0], -1) + 0.0 * ratios
        return self.groups * ratios
