"""DIYSink's ReW at inference ("To Sink or Not to Sink", Sec. 4.2): a small MLP maps a frozen
sentence encoder's embedding of each sample's question to ``[w_sink, w_non]``, which scale that
sample's V-sink slots and other patch slots where the LLM receives them.

    rew = ReWeights(slotted, SentenceEmbedder("sentence-transformers/all-MiniLM-L6-v2"), mlp)
    rew.set_questions(["How many objects?", ...])   # before each forward: one question per batch row

The weights are ``2 * sigmoid(z)``: positive, below 2, exactly (1, 1) when the last layer is zero
(the plain DualMLP). sinktrain's trainer (sinktrain.diysink.rew) adds its training bookkeeping.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from .errors import SinkTrainError
from .slots import SlotState
from .slotted import SlottedModel

HIDDEN = 64
SPREAD_FLOOR = 1e-6  # an embedding feature every training question shares is centred to 0, not divided by 0
MAX_TOKENS = 128


class ReWeighter(nn.Module):
    """sentence embedding (B, E) -> (B, 2) weights [w_sink, w_non], exactly (1, 1) at initialisation.

    The MLP reads embeddings standardised by the training questions' mean and spread (buffers, set by
    ``standardize`` before training and saved with the weights): sentence embeddings share a large
    common part, and from raw ones every question's weights first move together, so question kinds
    whose loss is flat near (1, 1) follow the kinds that pull (measured on the demo ReW set: both
    kinds collapsed to w_non ~0.01 in 4 of 4 seeds; standardised, they part in all 4)."""

    def __init__(self, width: int, hidden: int = HIDDEN):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 2))
        self.register_buffer("center", torch.zeros(width))
        self.register_buffer("spread", torch.ones(width))
        self.start_neutral()

    @torch.no_grad()
    def standardize(self, embeddings: torch.Tensor) -> None:
        """Center and scale the MLP's input by these (N, E) training-question embeddings."""
        self.center.copy_(embeddings.mean(dim=0))
        self.spread.copy_(embeddings.std(dim=0, unbiased=False).clamp(min=SPREAD_FLOOR))

    @torch.no_grad()
    def start_neutral(self) -> None:
        """Zero the last layer: both weights exactly 1 (sinktrain redoes it gathered under ZeRO-3)."""
        self.mlp[-1].weight.zero_()
        self.mlp[-1].bias.zero_()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.mlp((embeddings - self.center) / self.spread))


class SentenceEmbedder:
    """Any transformers encoder, mean-pooled over its real tokens (the sentence-transformers recipe
    for models such as all-MiniLM-L6-v2); frozen."""

    def __init__(self, name: str, device: torch.device | str = "cpu"):
        self.name, self.device = name, device
        self.tokenizer = self.load_tokenizer(name)
        self.model = self.load_model(name).to(device).eval().requires_grad_(False)

    def load_tokenizer(self, name: str):
        return AutoTokenizer.from_pretrained(name)

    def load_model(self, name: str) -> nn.Module:
        return AutoModel.from_pretrained(name)

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), width) float32: the mean of each text's token states over its real tokens."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
        hidden = self.model(**tokens).last_hidden_state.float()
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def slot_weights(weights: torch.Tensor, state: SlotState) -> torch.Tensor:
    """(B, 2) weights -> (B, T): w_sink on each row's V-sink slots, w_non on its other patch slots, 1 elsewhere."""
    sinks = state.sink_mask()
    w_sink, w_non = weights[:, :1], weights[:, 1:]
    return torch.where(state.patch & sinks, w_sink, torch.where(state.patch, w_non, torch.ones_like(w_sink)))


class ReWeights:
    """ReW on a slotted model with a DualMLP: ``module`` (a ReWeighter) becomes the model's ``rew``
    submodule, its weights scale each forward's slots."""

    def __init__(self, slotted: SlottedModel, encoder: SentenceEmbedder | str, module: ReWeighter):
        """``encoder``: a SentenceEmbedder, or its name to load at the first set_questions (an export's
        from_pretrained builds the model on the meta device, where no encoder can load)."""
        self.slotted, self.encoder, self.module = slotted, encoder, module
        slotted.model.add_module("rew", module)
        slotted.slots.scaler = self.scale
        slotted.rew = self  # what the model carries (run records and exports describe it)
        self.weights: torch.Tensor | None = None  # (B, 2) for the next forward

    def set_questions(self, questions: list[str]) -> torch.Tensor:
        """Weights for the next forwards' rows, from their questions (differentiable in the MLP)."""
        if isinstance(self.encoder, str):
            self.encoder = SentenceEmbedder(self.encoder)
        embeddings = self.encoder.embed(list(questions))
        parameter = next(self.module.parameters())
        self.weights = self.module(embeddings.to(parameter.device, parameter.dtype))
        return self.weights

    def scale(self, state: SlotState) -> torch.Tensor:
        if self.weights is None:
            raise SinkTrainError("ReW needs each sample's question before the forward: call set_questions([...]) (one per batch row)")
        if self.weights.shape[0] != state.visual.shape[0]:
            raise SinkTrainError(f"ReW has weights for {self.weights.shape[0]} questions, the forward has {state.visual.shape[0]} rows")
        return slot_weights(self.weights, state)
