"""The frozen sentence encoder ReW reads questions with: any transformers encoder, mean-pooled over
its real tokens (the sentence-transformers recipe for models such as all-MiniLM-L6-v2).

    encoder = SentenceEncoder("sentence-transformers/all-MiniLM-L6-v2")
    encoder.embed(["How many objects?", "Describe the image."])   # (2, 384)

It is loaded outside ZeRO-3's partitioned loading (it is no part of the trained model: every rank
holds it whole) and never trains.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.integrations import deepspeed as hf_deepspeed

from sinktrain.errors import SinkTrainError

DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 128


@contextmanager
def whole_loading(zero3_config=None):
    """``from_pretrained`` inside the block loads whole weights; ``zero3_config`` (the run's live
    HfDeepSpeedConfig, if any) switches ZeRO-3 loading back on afterwards."""
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if zero3_config is not None:
            hf_deepspeed.set_hf_deepspeed_config(zero3_config)


def has_vocabulary(tokenizer) -> bool:
    """False for what transformers builds from a directory without tokenizer files: specials only,
    every word unknown."""
    ids = tokenizer("the of and is a", add_special_tokens=False).input_ids
    return len(tokenizer) > len(set(tokenizer.all_special_ids)) and any(i != tokenizer.unk_token_id for i in ids)


class SentenceEncoder:
    def __init__(self, name: str, device: torch.device | str = "cpu", zero3_config=None):
        self.name = name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            problem = None if has_vocabulary(self.tokenizer) else "it has no vocabulary beyond its special tokens"
        except (OSError, ValueError, TypeError) as err:
            problem = str(err)
        if problem:
            raise SinkTrainError(
                f"--sentence_encoder {name}: no tokenizer could be loaded ({problem}); pass a transformers encoder "
                f"directory or hub id that holds its tokenizer files (e.g. {DEFAULT})"
            )
        with whole_loading(zero3_config):
            try:
                self.model = AutoModel.from_pretrained(name).to(device).eval().requires_grad_(False)
            except (OSError, ValueError) as err:
                raise SinkTrainError(f"--sentence_encoder {name}: no encoder model could be loaded ({err}); pass e.g. {DEFAULT}") from err
        self.device = device

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
