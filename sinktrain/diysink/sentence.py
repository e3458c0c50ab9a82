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
from sinktrain.modeling.rew import SentenceEmbedder

DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"


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


class SentenceEncoder(SentenceEmbedder):
    """The model-side embedder (sinktrain.modeling.rew), loaded with clear errors and outside ZeRO-3."""

    def __init__(self, name: str, device: torch.device | str = "cpu", zero3_config=None):
        self.zero3_config = zero3_config
        super().__init__(name, device)

    def load_tokenizer(self, name: str):
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            problem = None if has_vocabulary(tokenizer) else "it has no vocabulary beyond its special tokens"
        except (OSError, ValueError, TypeError) as err:
            problem = str(err)
        if problem:
            raise SinkTrainError(
                f"--sentence_encoder {name}: no tokenizer could be loaded ({problem}); pass a transformers encoder "
                f"directory or hub id that holds its tokenizer files (e.g. {DEFAULT})"
            )
        return tokenizer

    def load_model(self, name: str):
        with whole_loading(self.zero3_config):
            try:
                return AutoModel.from_pretrained(name)
            except (OSError, ValueError) as err:
                raise SinkTrainError(f"--sentence_encoder {name}: no encoder model could be loaded ({err}); pass e.g. {DEFAULT}") from err
