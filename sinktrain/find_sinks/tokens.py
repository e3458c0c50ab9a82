"""Where a massive LLM activation shows: at the first token, at delimiters, on visual tokens.

Sun et al. ("Massive Activations in LLMs") find the massive dims first at the sequence's first
token and at delimiter tokens ('.', '\\n', and the chat template's special tokens: BOS for LLaMA,
each turn's ``<|im_start|>`` for Qwen), and only then on some visual tokens (L-sinks). So
find_sink_dims picks LLM dims on every token and reports, per dim, where it shows.

    delimiters = delimiter_table(tokenizer, image_token_id)      # (vocab,) bool, once per run
    categories = token_categories(input_ids, attention_mask, delimiters, image_token_id)
"""

from __future__ import annotations

import string

import torch

FIRST, DELIMITER, VISUAL, OTHER = range(4)
CATEGORY_NAMES = ("first token", "delimiters", "visual", "other text")
PADDING = -1
_SEPARATORS = set(string.punctuation + string.whitespace)


def is_delimiter_text(text: str) -> bool:
    """Nothing but punctuation and white space (byte-level and sentencepiece space marks included)."""
    cleaned = text.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ")
    return bool(cleaned) and set(cleaned) <= _SEPARATORS


def delimiter_table(tokenizer, image_token_id: int) -> torch.Tensor:
    table = torch.zeros(len(tokenizer), dtype=torch.bool)
    for token_id in range(len(tokenizer)):
        table[token_id] = is_delimiter_text(tokenizer.convert_ids_to_tokens(token_id) or "")
    special = [i for i in tokenizer.all_special_ids if i is not None and 0 <= i < len(tokenizer)]
    table[special] = True
    table[image_token_id] = False
    if tokenizer.pad_token_id is not None:
        table[tokenizer.pad_token_id] = False
    return table


def token_categories(input_ids: torch.Tensor, attention_mask: torch.Tensor, delimiters: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """(B, T) category of every position (PADDING where the attention mask is 0)."""
    categories = torch.where(delimiters.to(input_ids.device)[input_ids], DELIMITER, OTHER)
    categories = torch.where(input_ids == image_token_id, VISUAL, categories)
    real = attention_mask.bool()
    first = real.long().argmax(dim=1)  # right- or left-padded: the first attended position
    categories[torch.arange(input_ids.shape[0], device=input_ids.device), first] = FIRST
    return torch.where(real, categories, PADDING)
