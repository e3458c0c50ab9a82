"""The key-gating formula, checked on captured attention logits (shared by every family's gating tests)."""

import torch


def assert_keys_scaled(ours, theirs, our_weights, state, attention_mask, c_sink: float, c_rest: float) -> None:
    """Pre-softmax logits ``ours`` (B, H, T, T) to V-sink keys are c_sink x ``theirs`` (stock), to
    other visual keys c_rest x, to text keys unchanged; and they are what eager attention
    softmaxes (``our_weights``, causal and padding mask)."""
    assert state.v_sinks.sum() > 0 and not (state.v_sinks & ~state.patch).any()
    for row in range(ours.shape[0]):
        sinks, rest = state.v_sinks[row], state.patch[row] & ~state.v_sinks[row]
        text = ~state.patch[row]
        assert torch.allclose(ours[row][..., sinks], c_sink * theirs[row][..., sinks], rtol=1e-4, atol=1e-5)
        assert torch.allclose(ours[row][..., rest], c_rest * theirs[row][..., rest], rtol=1e-4, atol=1e-5)
        assert torch.allclose(ours[row][..., text], theirs[row][..., text], rtol=1e-5, atol=1e-6)
    length = ours.shape[-1]
    allowed = torch.ones(length, length).tril().bool() & attention_mask.bool()[:, None, None, :]
    expected = ours.masked_fill(~allowed, float("-inf")).softmax(-1)
    real = attention_mask.bool()
    assert torch.allclose(our_weights.transpose(1, 2)[real], expected.transpose(1, 2)[real], atol=1e-5)
