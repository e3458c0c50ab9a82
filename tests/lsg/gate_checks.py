"""LSG invariants checked the same way for every family: the key-gating formula on captured
attention logits, and cached generation against full recompute."""

import torch

from sinktrain.data.chat import IGNORE_INDEX


def last_prompt_index(backbone) -> list[int]:
    return backbone.slots.state.last_prompt_index.tolist()


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


def cached_generate_equals_recompute(backbone, gating, prompt: dict, vision: dict, steps: int = 5, **generate) -> torch.Tensor:
    """Gates set to non-neutral random weights; greedy ``generate()`` with the KV cache must equal
    greedy decoding by full recompute (every step re-runs the whole sequence without a cache;
    the generated tokens are labels, so the last prompt token stays the prompt's last one), and
    the gates read the prompt's last token at every step. ``generate``: more generate() arguments.
    Returns the generated ids."""
    with torch.no_grad():
        for gate in gating.gates.values():  # non-neutral learned gates
            torch.nn.init.normal_(gate.out.weight, std=1.0)
    cached = backbone.model.generate(
        **prompt, max_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True, **generate,
    )
    prefill = {layer: ratios.clone() for layer, ratios in gating.last_ratios.items()}  # decoding steps run no gate
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    rows, length = ids.shape
    for step in range(steps):
        labels = ids.clone()
        labels[:, :length] = IGNORE_INDEX
        with torch.no_grad():
            logits = backbone.model(**backbone.model_inputs(ids, mask, vision), labels=labels, use_cache=False).logits
        assert last_prompt_index(backbone) == [length - 1] * rows
        for layer, ratios in prefill.items():  # the gates read the prompt's last token at every step
            assert torch.allclose(gating.last_ratios[layer], ratios, atol=1e-6), (step, layer)
        assert torch.allclose(logits[:, -1], cached.logits[step], atol=1e-5), step  # the cache holds the scaled keys
        next_ids = logits[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, next_ids], 1), torch.cat([mask, torch.ones_like(next_ids)], 1)
    assert torch.equal(cached.sequences, ids)
    return ids[:, length:]


def assert_three_groups(backbone, gating, hidden, truth, layers) -> None:
    """At each layer the profile's L-sink rule finds exactly ``truth`` (planted L-sink slots), and
    the gates' groups are exactly V-sinks, those L-sinks, the other patch slots, and the rest."""
    from sinktrain.modeling.keys import L_SINK, ORDINARY, TEXT, V_SINK
    from sinktrain.modeling.sinks import l_sink_mask

    state, profile = backbone.slots.state, backbone.sink_profile
    for layer in layers:
        found = l_sink_mask(hidden[layer], state.patch, state.v_sinks, profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
        assert torch.equal(found, truth), layer
        groups = gating._groups_at(hidden[layer], state)
        assert torch.equal(groups == L_SINK, truth)
        assert torch.equal(groups == V_SINK, state.v_sinks)
        assert torch.equal(groups == ORDINARY, state.patch & ~truth & ~state.v_sinks)
        assert torch.equal(groups == TEXT, ~state.patch)
