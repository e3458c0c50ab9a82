"""The demo's sentence encoder for ReW: a tiny BERT (transformers' ``BertModel``, random weights)
with a WordPiece vocabulary of every word the demo data can say, so each demo question embeds
into its own vector. Real runs use a public sentence-embedding model
(sinktrain.diysink.sentence.DEFAULT); the demo has no network.

A trained sentence encoder places questions by meaning; a random one's mean-pooled states are
mostly what every sentence shares: its position and segment embeddings. With those, all demo
questions embedded within ~27% of their common mean and ReW's MLP moved every question's weights
together (global and local questions within 0.01 of each other after 100 steps). So this one has
none (zeroed): its embeddings are decided by the words (spread ~86% of the mean), as a trained
encoder's are by meaning, and ReW separates the demo's question kinds (sinktrain.demo.rew_set).
"""

from __future__ import annotations

import re
from pathlib import Path

from transformers import BertConfig, BertModel, BertTokenizer

from sinktrain.demo.cache import reproducible

SEED = 7
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def demo_words() -> list[str]:
    from sinktrain.data.scenes import vocabulary_sentences

    return sorted({word for sentence in vocabulary_sentences() for word in re.findall(r"\w+|[^\w\s]", sentence.lower())})


def build(out_dir: Path) -> None:
    out_dir.mkdir(parents=True)
    tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(SPECIALS + demo_words())}, do_lower_case=True)
    tokenizer.save_pretrained(out_dir)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128,
    )
    with reproducible(SEED):
        model = BertModel(config)
        model.embeddings.position_embeddings.weight.data.zero_()
        model.embeddings.token_type_embeddings.weight.data.zero_()
        model.save_pretrained(out_dir)
