"""Forward hooks that feed SinkStats from a backbone's vision tower and LLM, one batch at a time.

    with SinkCapture(backbone, stats, vflag, delimiters) as capture:
        for input_ids, attention_mask, vision in batches:
            capture.run(input_ids, attention_mask, vision)   # one prefill forward; hooks count every layer

Vision tower: hidden-state index k is the input of encoder layer k (k = L: the last layer's
output), the indexing of ``output_hidden_states`` that ``vision_feature_layer`` refers to; states
0 .. the one feeding the connector are counted, on the positions that reach it
(``Backbone.vision_states``: CLS dropped where LLaVA drops it, Qwen's flat patch sequence cut per
image; where the family lists a final LayerNorm last among its vision layers, DeepSeek-VL's
post_layernorm, the last index is that norm's output, the tensor its connector reads). A second
vision branch (DeepSeek-VL-Hybrid's SAM) is counted once, at the connector's second input. LLM:
layer l is the input of decoder layer l (where LSG gates read it), counted twice:
every attended token (where massive dims are chosen), and the visual slots that are not V-sinks
(an L-sink is a visual token that is not a V-sink); ``VSinkFlag`` says which those are, and the
backbone maps its per-patch flags onto slots as it maps V-sinks (a merged slot is a V-sink when
any of its patches is). The forward is the backbone model's own, as in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from sinktrain.backbones.base import Backbone
from sinktrain.errors import SinkTrainError
from sinktrain.find_sinks.bins import MAGNITUDE_MASK
from sinktrain.find_sinks.stats import SinkStats
from sinktrain.find_sinks.tokens import CATEGORY_NAMES, token_categories
from sinktrain.modeling.sinks import v_sink_mask

GROUP_ELEMENTS = 1 << 23  # hidden-state elements counted together (32 MiB in fp32; x3 while binning)


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

    def __call__(self, features: torch.Tensor, norms: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """features (images, tokens, D), their L2 norms and real positions (images, tokens) -> (images, tokens)."""
        if self.exact:
            return v_sink_mask(features.float(), self.criterion, self.tau, self.dims) & keep
        typical = norms.masked_fill(~keep, float("nan")).nanmedian(dim=-1).values / features.shape[-1] ** 0.5
        level = torch.clamp(self.min_ratio * typical, min=self.min_magnitude).view(-1, 1)
        return (features.float().abs().amax(dim=-1) >= level) & keep


class SinkCapture:
    def __init__(self, backbone: Backbone, stats: SinkStats, vflag: VSinkFlag, delimiters: torch.Tensor):
        self.backbone, self.stats, self.vflag, self.delimiters = backbone, stats, vflag, delimiters
        self.layers = backbone.vision_layers()
        self.read = read_index(backbone.sink_profile.vit_layer, len(self.layers))
        self.vit_pending = Pending(stats.vit, layers=self.read + 1)
        self.llm_pending = Pending(stats.llm, layers=len(backbone.decoder_layers()))
        self.all_pending = Pending(stats.llm_all, layers=len(backbone.decoder_layers()))
        self.handles: list = []
        self.batch: BatchLayout | None = None

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
        if self.stats.high_res is not None:  # the connector's second input: DeepSeek-VL-Hybrid's SAM branch
            self.handles.append(self.backbone.connector.register_forward_pre_hook(lambda module, args: self._high_res(args[1])))
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
        features, real = self.backbone.vision_states(hidden, self.batch.vision)
        self.vit_pending.slot(index, features.shape, features.device, real).copy_(features)
        self.vit_pending.filled()
        if index == self.read:  # the LLM runs next and needs the V-sink flags
            self.vit_pending.flush()
            norms = self.stats.read.add(features, real)
            flags = self.vflag(features, norms, real)
            if self.stats.slots is not None:
                self._count_slots(features, norms, real)
            self.batch.set_v_sinks(self.backbone, flags[real])

    def _high_res(self, features: torch.Tensor) -> None:
        """(images, tokens, D): one row of connector input per slot, every position real."""
        self.stats.high_res.add(0, features.detach().float().unsqueeze(0).clone())
        self.stats.high_res_read.add(features.detach().float())

    def _count_slots(self, features: torch.Tensor, norms: torch.Tensor, real: torch.Tensor) -> None:
        """A slot's value per channel: the largest of its patches' (its norm: the largest norm)."""
        group = self.backbone.connector_group
        images, tokens, width = features.shape
        slots = features.abs().view(images, tokens // group, group, width).amax(dim=2)
        slot_norms = norms.view(images, tokens // group, group).amax(dim=2)
        self.stats.slots.add(slots, real.view(images, tokens // group, group).any(dim=2), slot_norms)

    def _llm(self, index: int, hidden: torch.Tensor) -> None:
        layout = self.batch
        width = hidden.shape[-1]
        flat = hidden.detach().reshape(-1, width)
        visual = self.llm_pending.slot(index, (*layout.visual_index.shape, width), hidden.device, layout.visual_keep)
        if flat.dtype == torch.float32:  # straight into the buffer, no temporary
            torch.index_select(flat, 0, layout.visual_index.view(-1), out=visual.view(-1, width))
        else:
            visual.copy_(flat[layout.visual_index])
        self.llm_pending.filled()
        # Every token: magnitudes are all the counting needs, so the buffer takes |h| (one pass).
        magnitudes = self.all_pending.slot(index, hidden.shape, hidden.device, layout.real).view(-1, width)
        if flat.dtype == torch.float32:  # the sign bit cleared: |h|, exactly
            torch.bitwise_and(flat.view(torch.int32), MAGNITUDE_MASK, out=magnitudes.view(torch.int32))
        else:
            magnitudes.copy_(flat).abs_()
        peaks = magnitudes.new_zeros(len(CATEGORY_NAMES) + 1, width)  # row 0 takes the padding
        peaks.scatter_reduce_(0, layout.category_index.expand_as(magnitudes), magnitudes, "amax")
        torch.maximum(self.stats.where[:, index], peaks[1:], out=self.stats.where[:, index])
        self.all_pending.filled()

    # -- one batch -----------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision: dict) -> None:
        """One prefill forward of a batch (every row holds at least one image)."""
        self.batch = BatchLayout.of(self.backbone, input_ids, attention_mask, vision, self.delimiters)
        inputs = self.backbone.model_inputs(input_ids, attention_mask, vision)
        self.backbone.model(**inputs, use_cache=False, logits_to_keep=1)  # the model's own forward, no LM head work
        self.llm_pending.flush()
        self.all_pending.flush()
        self.stats.images += self.batch.visual_index.shape[0]
        self.batch = None


@dataclass
class BatchLayout:
    """Where one batch's slots are: visual positions per image (padded), categories, real tokens."""

    vision: dict
    real: torch.Tensor  # (B, T) bool: attended
    visual_index: torch.Tensor  # (images, slots) flat (B * T) positions of each image's slots, padded
    visual_real: torch.Tensor  # (images, slots) bool
    visual_keep: torch.Tensor  # (images, slots) bool: real slots that are not V-sinks (set at the read layer)
    category_index: torch.Tensor  # (B * T, 1) long: 1 + token category, 0 for padding

    @classmethod
    def of(cls, backbone: Backbone, input_ids, attention_mask, vision: dict, delimiters: torch.Tensor) -> "BatchLayout":
        visual = input_ids == backbone.image_token_id
        flat = visual.reshape(-1).nonzero().squeeze(-1)
        sizes = backbone.slots_per_image(vision, flat.numel())
        index = pad_sequence(list(flat.split(sizes)), batch_first=True)
        real = torch.arange(index.shape[1], device=index.device) < torch.tensor(sizes, device=index.device)[:, None]
        kinds = token_categories(input_ids, attention_mask, delimiters, backbone.image_token_id)
        return cls(vision, attention_mask.bool(), index, real, real.clone(), (kinds + 1).reshape(-1, 1))

    def set_v_sinks(self, backbone: Backbone, patch_flags: torch.Tensor) -> None:
        """Patch flags (connector-input order) -> slot flags, as the backbone maps V-sinks."""
        tokens = backbone.to_slot_order(patch_flags.view(-1, backbone.connector_group).any(dim=-1), self.vision)
        sinks = torch.zeros_like(self.visual_real)
        sinks[self.visual_real] = tokens.to(sinks.device)
        self.visual_keep = self.visual_real & ~sinks


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
