"""Expected chat-format encodings, computed with the tokenizer itself (shared by every family's tests)."""

M = -100  # IGNORE_INDEX, written out so a change there fails the tests


def conv(*values):
    """A LLaVA-format conversation: human and gpt turns alternating, starting with human."""
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


def whole(tok, *parts):
    """Expected (ids, labels): ONE tokenization of ``"".join(parts)`` by the tokenizer itself (a
    BOS included where the tokenizer adds one); parts at odd positions are targets. Every part
    boundary must be a token boundary (asserted), so each target's label span is the tokens of
    its own characters."""
    ids, labels = [], []
    for k in range(len(parts)):
        prefix = tok("".join(parts[: k + 1])).input_ids
        assert prefix[: len(ids)] == ids, f"part {k} changes the tokens before it"
        labels += prefix[len(ids):] if k % 2 else [M] * (len(prefix) - len(ids))
        ids = prefix
    return ids, labels
