"""Per-forward slot bookkeeping: which LLM positions hold image tokens, and what methods do to them.

Forward hooks on the stock model, installed once per slotted model (slotted.py; no copied modeling code):

* on the model itself (pre-forward): the forward's ``input_ids``, attention mask and labels say
  where the slots are and where the last prompt token is (the position before the first label;
  without labels the last attended position, which for a left-padded generation prompt is its end);
* on the vision tower (pre-forward): the image inputs of this forward (how many slots each image
  fills, how the family orders them), completed by the family's ``watch_vision`` hooks where the
  tower's call does not carry them all;
* on the connector (pre-forward): V-sinks are read on its input with the profile's rule
  (``SlottedModel.token_sink_mask``);
* on the language model (pre-forward): the state of this forward is assembled (V-sinks mapped
  onto slots by the family's ``to_slot_order``), and registered ``orderers`` (DIYSink's
  sink-first order) may permute each image's patch slots. Embeddings and position ids move
  together, so a token keeps its own position id (its (t, h, w) under M-RoPE, its index under
  1-D RoPE) wherever it goes; the causal mask is by sequence index, so a moved token is seen by
  everything after its new place. The recorded masks follow the permutation, so LSG reads them
  in the order the LLM sees. A ``scaler`` then multiplies each slot's embedding (DIYSink's ReW
  weights), and a ``selector`` (slot_select.py) takes visual slots away from
  the LLM: a training forward removes them from its input (its output is put back at full
  length); with ``select_by_mask`` (generation) they are masked out of attention instead, at the
  prefill and in every decoding step, so the KV cache keeps the sequence's layout.

The state is assembled where the LLM starts because the order of the other hooks differs:
``generate()`` encodes the images once before its prefill forward, training inside each forward.
The last images seen stay in use until the vision tower runs again (``generate(use_cache=False)``
sends the same image tokens every step without re-encoding). During generation only the prefill
has slots; decoding steps (a cache is present) leave the state as the prefill left it, and a
forward whose ids extend the previous forward's (generation without a cache) keeps its prompt's
last token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import SinkTrainError
from .slot_select import IGNORE_INDEX, Compaction, compact_inputs, hide_slots

LATER = 1 << 40  # sort key offset that puts non-patch positions after every patch slot


@dataclass
class SlotState:
    visual: torch.Tensor  # (B, T) bool: image-token slots
    patch: torch.Tensor  # (B, T) bool: slots holding an image patch (methods act on these)
    image: torch.Tensor  # (B, T) long: which image of the forward a slot belongs to, -1 elsewhere
    last_prompt_index: torch.Tensor  # (B,) long
    vision: dict  # the forward's image inputs (the family maps connector rows with them)
    input_ids: torch.Tensor  # (B, T) as the forward received them
    v_sinks: torch.Tensor | None = None  # (B, T) bool, set when the connector runs

    @property
    def length(self) -> int:
        return self.visual.shape[1]

    @property
    def num_images(self) -> int:
        return int(self.image.max().item()) + 1 if self.visual.any() else 0

    def sink_mask(self) -> torch.Tensor:
        return self.v_sinks if self.v_sinks is not None else torch.zeros_like(self.visual)

    def permute(self, order: torch.Tensor) -> None:
        """Masks follow the tokens: slot k now holds what slot order[k] held."""
        self.visual, self.patch, self.image = (m.gather(1, order) for m in (self.visual, self.patch, self.image))
        if self.v_sinks is not None:
            self.v_sinks = self.v_sinks.gather(1, order)


def last_prompt_index(attention_mask: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if labels is not None:
        first_label = torch.where(labels != IGNORE_INDEX, positions, attention_mask.shape[1]).amin(dim=1)
        return (first_label - 1).clamp(min=0)
    return torch.where(attention_mask.bool(), positions, -1).amax(dim=1)


def sink_first_order(state: SlotState) -> torch.Tensor:
    """(B, T) gather order putting each image's V-sinks first among its patch slots (DIYSink).

    Within an image, sinks then non-sinks, each group in original order; every other position
    keeps its token."""
    positions = torch.arange(state.length, device=state.visual.device).expand_as(state.visual)
    later = positions + LATER
    sources = torch.where(state.patch, state.image * 2 * state.length + (~state.sink_mask()).long() * state.length + positions, later)
    destinations = torch.where(state.patch, positions, later)
    order = positions.clone()
    order.scatter_(1, destinations.argsort(dim=1, stable=True), sources.argsort(dim=1, stable=True))
    return order


def permute_positions(position_ids: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) or (3|4, B, T) gathered along T; a 4-row tensor's row 0 (text positions,
    used only to build masks) stays."""
    if position_ids.dim() == 2:
        return position_ids.gather(1, order)
    moved = position_ids.gather(2, order.unsqueeze(0).expand_as(position_ids))
    if position_ids.shape[0] == 4:
        moved[0] = position_ids[0]
    return moved


def continues(previous: SlotState | None, input_ids: torch.Tensor) -> bool:
    """Whether these ids are the previous forward's plus one token (a step of cache-less
    generation). A longer extension is a new prompt (a chat's next question after the previous
    answer), whose gates must read its own last prompt token."""
    if previous is None or previous.input_ids.shape[0] != input_ids.shape[0] or previous.length + 1 != input_ids.shape[1]:
        return False
    return bool(torch.equal(input_ids[:, : previous.length], previous.input_ids))


class SlotTracker:
    def __init__(self, backbone):
        self.backbone = backbone
        self.state: SlotState | None = None
        self.decoding = False
        self.orderers: list[Callable[[SlotState], torch.Tensor]] = []
        self.selector: Callable[[SlotState], torch.Tensor] | None = None  # (B, T) bool: slots the LLM keeps
        self.select_by_mask = False  # the selector masks slots out of attention instead of removing them
        self.scaler: Callable[[SlotState], torch.Tensor] | None = None  # (B, T) factor on each slot's embedding (ReW)
        self.compaction: Compaction | None = None  # what the selector kept in the last forward
        self.hidden: torch.Tensor | None = None  # (B, T) slots the prefill masked out (select_by_mask)
        self._text: tuple | None = None  # (input_ids, attention_mask, labels) of the current forward
        self._vision: dict | None = None  # the image inputs the vision tower last ran on
        self._tokens: torch.Tensor | None = None  # their V-sink flag per connector output token
        self._handles = [
            backbone.model.register_forward_pre_hook(self._begin, with_kwargs=True),
            backbone.vision_tower.register_forward_pre_hook(self._see_vision, with_kwargs=True),
            backbone.language_model.register_forward_pre_hook(self._enter_llm, with_kwargs=True),
            backbone.language_model.register_forward_hook(self._leave_llm),
        ]
        self._handles += backbone.watch_vision(self._note_vision)
        self._connector_handle = None
        self.watch_connector()

    def watch_connector(self) -> None:
        """(Re)attach the V-sink reader to the current connector (after DIYSink replaces it)."""
        if self._connector_handle is not None:
            self._connector_handle.remove()
        self._connector_handle = self.backbone.connector.register_forward_pre_hook(self._read_v_sinks)

    @property
    def sinks_per_image(self) -> float:
        """V-sink slots per image in the last forward (progress logs: are V-sinks being found?)."""
        state = self.state
        if state is None or state.v_sinks is None:
            return 0.0
        return float(state.v_sinks.sum()) / max(state.num_images, 1)

    def require(self) -> SlotState:
        if self.state is None:
            raise SinkTrainError("no forward has run through this backbone's model yet (slot state is empty)")
        return self.state

    # -- hooks -----------------------------------------------------------------------------------
    def _begin(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self.decoding = cache is not None and cache.get_seq_length() > 0
        if self.decoding:
            return
        if input_ids is None:
            raise SinkTrainError("sinktrain backbones need input_ids (not inputs_embeds) to know where image slots are")
        mask = kwargs.get("attention_mask")
        self._text = (input_ids, torch.ones_like(input_ids) if mask is None else mask, kwargs.get("labels"))

    def _see_vision(self, module, args, kwargs) -> None:
        self._vision, self._tokens = self.backbone.vision_call_inputs(args, kwargs), None

    def _note_vision(self, vision: dict) -> None:
        self._vision = vision  # the V-sink flags read meanwhile stay: same images

    def _read_v_sinks(self, module, args) -> None:
        self._tokens = self.backbone.token_sink_mask(*args)

    def _enter_llm(self, module, args, kwargs):
        self.compaction = None
        embeds = kwargs.get("inputs_embeds")
        if self.decoding:
            return self._keep_hidden(args, kwargs, embeds)
        self.hidden = None
        if self._text is None or embeds is None:
            return None
        input_ids, attention_mask, labels = self._text
        vision, tokens = self._vision, self._tokens
        self._text = None
        previous = self.state
        self.state = state = self._new_state(input_ids, attention_mask, labels, vision or {})
        if labels is None and continues(previous, input_ids):
            state.last_prompt_index = previous.last_prompt_index
        if tokens is not None and state.visual.any():
            v_sinks = torch.zeros_like(state.visual)
            v_sinks[state.visual] = self.backbone.to_slot_order(tokens, vision).to(v_sinks.device)
            state.v_sinks = v_sinks & state.patch
        if not (self.orderers or self.selector or self.scaler) or embeds.shape[1] != state.length:
            return None
        positions = self._positions(kwargs, embeds)
        if self.orderers:
            order = self.orderers[0](state)
            embeds = kwargs["inputs_embeds"] = embeds.gather(1, order.unsqueeze(-1).expand_as(embeds))
            positions = kwargs["position_ids"] = permute_positions(positions, order)
            if kwargs.get("attention_mask") is None:  # permuted positions must not read as packed sequences
                kwargs["attention_mask"] = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            state.permute(order)
        if self.scaler is not None:
            embeds = kwargs["inputs_embeds"] = embeds * self.scaler(state).unsqueeze(-1).to(embeds.dtype)
        if self.selector is not None and self.select_by_mask:
            keep = self.selector(state)
            self.hidden = ~keep
            kwargs["attention_mask"] = hide_slots(kwargs.get("attention_mask"), keep, embeds.shape[1])
        elif self.selector is not None:
            self.compaction = Compaction.of(self.selector(state))
            kwargs = compact_inputs(kwargs, embeds, positions, self.compaction)
        return args, kwargs

    def _keep_hidden(self, args, kwargs, embeds):
        """A decoding step after a masked prefill: its attention mask hides the same slots."""
        if self.selector is not None and not self.select_by_mask:
            raise SinkTrainError(
                "this slot selection removes slots from the sequence, which a KV cache cannot follow; generate() with "
                "selecting_slots(..., by_mask=True) (or use_cache=False)"
            )
        if self.hidden is None or embeds is None:
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        kwargs["attention_mask"] = hide_slots(kwargs.get("attention_mask"), ~self.hidden, cache.get_seq_length() + embeds.shape[1])
        return args, kwargs

    def _leave_llm(self, module, args, output):
        if self.compaction is not None:
            output["last_hidden_state"] = self.compaction.expand(output["last_hidden_state"])
        return output

    def _new_state(self, input_ids, attention_mask, labels, vision) -> SlotState:
        visual = input_ids == self.backbone.image_token_id
        image = torch.full_like(input_ids, -1)
        count = int(visual.sum())
        if count:
            per_image = self.backbone.slots_per_image(vision, count) if vision else []
            if sum(per_image) != count:
                raise SinkTrainError(
                    f"the sequence holds {count} image-token slots but the images fill {sum(per_image)} ({per_image}); "
                    "build samples with the model's processor or sinktrain.data (each image's placeholder expands to its slot count)"
                )
            image[visual] = torch.repeat_interleave(torch.arange(len(per_image), device=image.device), torch.tensor(per_image, device=image.device))
        patch = visual.clone()
        if count and vision:
            patch[visual] = self.backbone.patch_slots(vision, count).to(patch.device)
        return SlotState(visual, patch, image, last_prompt_index(attention_mask, labels), vision, input_ids)

    @staticmethod
    def _positions(kwargs: dict, embeds: torch.Tensor) -> torch.Tensor:
        """The position ids the language model receives, or the ones it would build itself."""
        if kwargs.get("position_ids") is not None:
            return kwargs["position_ids"]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None else 0
        return (torch.arange(embeds.shape[1], device=embeds.device) + past).expand(embeds.shape[0], -1)
