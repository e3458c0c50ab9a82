"""Forward hooks that feed SinkStats from a backbone's vision tower and LLM, one batch at a time.

    with SinkCapture(backbone, stats, vflag) as capture:
        for batch in batches:
            capture.run(batch)          # one prefill forward; hooks count every layer

Vision tower: hidden-state index k is the input of encoder layer k (k = L: the last layer's
output), the indexing of ``output_hidden_states`` that ``vision_feature_layer`` refers to; states
0 .. the one feeding the connector are counted, and only the tokens that feed it (CLS dropped
where LLaVA drops it). LLM: layer l is the input of decoder layer l (where LSG gates read it),
visual tokens only, V-sinks left out (an L-sink is a visual token that is not a V-sink);
``VSinkFlag`` says which tokens those are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sinktrain.backbones.base import Backbone
from sinktrain.errors import SinkTrainError
from sinktrain.find_sinks.stats import SinkStats
from sinktrain.sinks import v_sink_mask

GROUP_ELEMENTS = 1 << 23  # hidden-state elements counted together (32 MiB in fp32; x3 while binning)


def vision_layers(vision_tower: nn.Module) -> nn.ModuleList:
    """The encoder's layer list (CLIP, SigLIP: ``encoder.layers``), found by name."""
    for name, module in vision_tower.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith("layers"):
            return module
    raise SinkTrainError(f"cannot find the encoder layers of vision tower {type(vision_tower).__name__}; add it to sinktrain/find_sinks/capture.py")


def read_index(feature_layer: int, num_layers: int) -> int:
    """``vision_feature_layer`` (e.g. -2) as a hidden-state index in 0..num_layers."""
    index = feature_layer + num_layers + 1 if feature_layer < 0 else feature_layer
    if not 0 <= index <= num_layers:
        raise SinkTrainError(f"vision_feature_layer {feature_layer} does not exist in a {num_layers}-layer vision tower; fix the model config")
    return index


def hidden_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def hidden_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass
class VSinkFlag:
    """Which visual tokens are V-sinks while the pass runs (the final threshold is not known yet).

    With the rule fully given (``criterion`` plus ``tau`` and, for dim_threshold, ``dims``) it is
    exactly the profile's rule; otherwise a token is flagged when any channel reaches
    ``min_ratio`` x its image's typical magnitude (the median token's RMS, ||h||_2 / sqrt(D)) and
    ``min_magnitude``: the massive-activation rule the dims are chosen by, per image.
    """

    min_ratio: float
    min_magnitude: float = 0.0
    criterion: str = "dim_threshold"
    dims: list[int] | None = None
    tau: float | None = None

    @property
    def exact(self) -> bool:
        return self.tau is not None and (self.criterion == "l2_norm" or bool(self.dims))

    def __call__(self, features: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """features (images, tokens, D) and their L2 norms (images, tokens) -> (images, tokens)."""
        if self.exact:
            return v_sink_mask(features.float(), self.criterion, self.tau, self.dims)
        typical = norms.median(dim=-1).values / features.shape[-1] ** 0.5
        level = torch.clamp(self.min_ratio * typical, min=self.min_magnitude).view(-1, 1)
        return features.float().abs().amax(dim=-1) >= level


class SinkCapture:
    def __init__(self, backbone: Backbone, stats: SinkStats, vflag: VSinkFlag):
        self.backbone, self.stats, self.vflag = backbone, stats, vflag
        self.layers = vision_layers(backbone.vision_tower)
        self.read = read_index(backbone.sink_profile.vit_layer, len(self.layers))
        self.visual_rows: torch.Tensor | None = None  # flat (B * T) indices of image tokens
        self.keep: torch.Tensor | None = None  # (images, tokens) bool: visual tokens that are not V-sinks
        self.vit_pending = Pending(stats.vit, layers=self.read + 1)
        self.llm_pending = Pending(stats.llm, layers=len(backbone.decoder_layers()))
        self.handles: list = []

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> "SinkCapture":
        # Vision states after the one feeding the connector never reach the LLM: not counted.
        for index, layer in enumerate(self.layers[: self.read + 1]):
            self.handles.append(layer.register_forward_pre_hook(self._vit_pre(index), with_kwargs=True))
        last = len(self.layers)
        if self.read == last:
            self.handles.append(self.layers[-1].register_forward_hook(lambda m, a, out: self._vit(last, hidden_output(out))))
        for index, layer in enumerate(self.backbone.decoder_layers()):
            self.handles.append(layer.register_forward_pre_hook(self._llm_pre(index), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _vit_pre(self, index: int):
        return lambda module, args, kwargs: self._vit(index, hidden_input(args, kwargs))

    def _llm_pre(self, index: int):
        return lambda module, args, kwargs: self._llm(index, hidden_input(args, kwargs))

    # -- counting ------------------------------------------------------------------------------
    def _vit(self, index: int, hidden: torch.Tensor) -> None:
        features = hidden[:, hidden.shape[1] - self.backbone.num_image_tokens :]  # CLS dropped
        self.vit_pending.slot(index, features.shape, features.device).copy_(features)
        self.vit_pending.filled()
        if index == self.read:  # the LLM runs next and needs the V-sink flags
            self.vit_pending.flush()
            norms = self.stats.read.add(features)
            self.keep = ~self.vflag(features, norms)  # the LLM counts visual tokens that are not V-sinks

    def _llm(self, index: int, hidden: torch.Tensor) -> None:
        width = hidden.shape[-1]
        images = self.visual_rows.shape[0] // self.backbone.num_image_tokens
        slot = self.llm_pending.slot(index, (images, self.backbone.num_image_tokens, width), hidden.device, self.keep)
        flat = hidden.reshape(-1, width)
        if flat.dtype == slot.dtype:
            torch.index_select(flat, 0, self.visual_rows, out=slot.view(-1, width))
        else:
            slot.view(-1, width).copy_(flat.index_select(0, self.visual_rows))
        self.llm_pending.filled()

    # -- one batch -----------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor) -> None:
        """One prefill forward of a batch (every row holds exactly one image)."""
        # Row-major positions of the image tokens: the order the connector's outputs fill them in.
        self.visual_rows = (input_ids == self.backbone.image_token_id).reshape(-1).nonzero().squeeze(-1)
        plain_forward(self.backbone, input_ids, attention_mask, pixel_values)
        self.llm_pending.flush()
        self.stats.images += input_ids.shape[0]
        self.visual_rows = self.keep = None


class Pending:
    """Consecutive layers of one part, gathered into one float32 buffer and counted together.

    Several layers per PartStats.add make small models cheap to profile (fewer, larger operations);
    ``max_elements`` bounds the buffer, so a large model counts each layer on its own. The buffer
    is reused from batch to batch (no allocator churn).
    """

    def __init__(self, part, layers: int, max_elements: int = GROUP_ELEMENTS):
        self.part, self.layers, self.max_elements = part, layers, max_elements
        self.buffer: torch.Tensor | None = None
        self.count, self.first, self.keep = 0, 0, None

    def slot(self, index: int, shape, device, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The (images, tokens, D) buffer slice where layer ``index`` goes."""
        if self.count == 0:
            self.first, self.keep = index, keep
            group = min(max(1, self.max_elements // math.prod(shape)), self.layers - index)
            wanted = (group, *shape)
            if self.buffer is None or tuple(self.buffer.shape) != wanted or self.buffer.device != torch.device(device):
                self.buffer = torch.empty(wanted, dtype=torch.float32, device=device)
        self.count += 1
        return self.buffer[self.count - 1]

    def filled(self) -> None:
        if self.count == self.buffer.shape[0]:
            self.flush()

    def flush(self) -> None:
        if self.count:
            self.part.add(self.first, self.buffer[: self.count], self.keep)
            self.count = 0


def plain_forward(backbone: Backbone, input_ids, attention_mask, pixel_values):
    """Prefill through the vision tower, connector and LLM; no LM head, no cache (nothing is generated)."""
    with torch.inference_mode():
        return backbone.model.model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, use_cache=False
        )
