"""Tests for sinktrain.modeling.sinks: the pure V-sink / L-sink functions, on hand-built tensors.

Expected masks and permutations are written out by hand, so the code under test cannot grade
itself. Run:
    python -m pytest tests/test_sinks.py -q
"""

import pytest
import torch

from sinktrain.modeling.sinks import (
    dim_threshold_mask,
    l2_norm_mask,
    l_sink_mask,
    rms_normalize,
    sink_first_order,
    v_sink_mask,
)


def tokens(*rows):
    """(1, len(rows), D) float tensor from lists."""
    return torch.tensor([rows], dtype=torch.float32)


# -- dim_threshold_mask ------------------------------------------------------------------------


def test_dim_threshold_reads_only_the_sink_dims():
    h = tokens(
        [0.0, 100.0, 0.0, 0.0],  # massive, but in a channel that is not a sink dim
        [0.0, 0.0, 70.0, 0.0],  # massive in dim 2
        [0.0, 0.0, 0.0, 65.0],  # massive in dim 3
        [1.0, 2.0, 3.0, 4.0],
    )
    assert dim_threshold_mask(h, [2, 3], 60.0).tolist() == [[False, True, True, False]]
    assert dim_threshold_mask(h, [2], 60.0).tolist() == [[False, True, False, False]]


def test_dim_threshold_negative_massive_values_count():
    h = tokens([0.0, -80.0], [0.0, 80.0], [0.0, -59.0])
    assert dim_threshold_mask(h, [1], 60.0).tolist() == [[True, True, False]]


def test_dim_threshold_is_inclusive_at_tau():
    h = tokens([60.0], [-60.0], [59.999])
    assert dim_threshold_mask(h, [0], 60.0).tolist() == [[True, True, False]]


def test_dim_threshold_keeps_leading_shape():
    h = torch.zeros(2, 3, 5, 8)
    h[1, 2, 4, 6] = 99.0
    mask = dim_threshold_mask(h, [6], 50.0)
    assert mask.shape == (2, 3, 5)
    assert mask.sum() == 1 and mask[1, 2, 4]


def test_dim_threshold_needs_dims():
    with pytest.raises(ValueError, match="at least one sink dimension"):
        dim_threshold_mask(torch.zeros(1, 2, 3), [], 1.0)


# -- l2_norm_mask ------------------------------------------------------------------------------


def test_l2_norm_mask_thresholds_the_norm_inclusively():
    h = tokens([3.0, 4.0], [-3.0, -4.0], [3.0, 3.9], [0.0, 0.0])  # norms 5, 5, <5, 0
    assert l2_norm_mask(h, 5.0).tolist() == [[True, True, False, False]]


def test_l2_norm_mask_does_not_overflow_in_fp16():
    # 300^2 * 4 = 360000 > fp16's max (65504): a half-precision norm would be inf for both.
    h = torch.tensor([[[300.0, 300.0, 300.0, 300.0], [1.0, 1.0, 1.0, 1.0]]], dtype=torch.float16)
    assert l2_norm_mask(h, 500.0).tolist() == [[True, False]]


# -- v_sink_mask -------------------------------------------------------------------------------


def test_v_sink_mask_dim_threshold_criterion():
    h = tokens([0.0, 0.0, -61.0], [0.0, 61.0, 0.0], [0.0, 0.0, 10.0])
    assert v_sink_mask(h, "dim_threshold", 60.0, [2]).tolist() == [[True, False, False]]


def test_v_sink_mask_l2_norm_criterion_ignores_dims():
    # Token 0 has no single large channel but a large norm; token 1 the other way round for tau.
    h = tokens([50.0, 50.0, 50.0], [0.0, 0.0, 80.0], [1.0, 1.0, 1.0])  # norms 86.6, 80, 1.7
    assert v_sink_mask(h, "l2_norm", 85.0).tolist() == [[True, False, False]]
    assert v_sink_mask(h, "l2_norm", 85.0, dims=[2]).tolist() == [[True, False, False]]
    assert v_sink_mask(h, "dim_threshold", 60.0, [2]).tolist() == [[False, True, False]]


def test_v_sink_mask_unknown_criterion():
    with pytest.raises(ValueError, match="unknown sink criterion 'max_norm'.*dim_threshold.*l2_norm"):
        v_sink_mask(tokens([1.0]), "max_norm", 1.0, [0])


def test_v_sink_mask_dim_threshold_without_dims_fails():
    with pytest.raises(ValueError, match="at least one sink dimension"):
        v_sink_mask(tokens([1.0]), "dim_threshold", 1.0)


# -- rms_normalize -----------------------------------------------------------------------------


def test_rms_normalize_values():
    h = torch.tensor([[3.0, 4.0], [2.0, -2.0]])
    rms = torch.tensor([[((9 + 16) / 2) ** 0.5], [2.0]])
    torch.testing.assert_close(rms_normalize(h, eps=0.0), h / rms)
    out = rms_normalize(torch.randn(4, 7, 16, generator=torch.Generator().manual_seed(0)) * 100)
    torch.testing.assert_close(out.pow(2).mean(-1), torch.ones(4, 7), rtol=1e-4, atol=1e-4)


def test_rms_normalize_is_fp32_and_has_no_weight():
    h = torch.full((1, 8), 1000.0, dtype=torch.float16)
    out = rms_normalize(h)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones(1, 8), rtol=1e-5, atol=1e-5)


# -- l_sink_mask -------------------------------------------------------------------------------


def test_l_sink_mask_excludes_v_sinks_and_text_positions():
    # Sequence: [text, vis, vis, vis, vis, text]; dim 0 is the LLM sink dim.
    h = torch.ones(1, 6, 4)
    for position in (0, 1, 2, 5):  # massive in dim 0 (after RMSNorm too: ~2 vs 1)
        h[0, position, 0] = 100.0
    visual = torch.tensor([[False, True, True, True, True, False]])
    v_sinks = torch.tensor([[False, True, False, False, False, False]])
    mask = l_sink_mask(h, visual, v_sinks, dims=[0], tau=1.5)
    # 0 and 5 are text, 1 is a V-sink: only 2 is an L-sink.
    assert mask.tolist() == [[False, False, True, False, False, False]]


def test_l_sink_mask_rms_norm_switch():
    # Raw value 30 passes tau 20; after weightless RMSNorm it is ~1.15 and does not.
    h = torch.tensor([[[30.0, 30.0, 30.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])
    visual = torch.tensor([[True, True]])
    none = torch.zeros(1, 2, dtype=torch.bool)
    assert l_sink_mask(h, visual, none, [0], 20.0, rms_norm=False).tolist() == [[True, False]]
    assert l_sink_mask(h, visual, none, [0], 20.0, rms_norm=True).tolist() == [[False, False]]
    # RMSNorm makes a relative outlier massive: 1000 among 127 ones -> ~11.3 > 10.
    h = torch.ones(1, 1, 128)
    h[0, 0, 5] = 1000.0
    one = torch.ones(1, 1, dtype=torch.bool)
    assert l_sink_mask(h, one, ~one, [5], 10.0).tolist() == [[True]]


# -- sink_first_order --------------------------------------------------------------------------


def apply(order, x):
    return x.gather(1, order)


def test_sink_first_order_puts_sinks_first_keeping_order():
    mask = torch.tensor([[False, True, False, False, True, False, True]])
    order = sink_first_order(mask)
    assert order.dtype == torch.long
    assert order.tolist() == [[1, 4, 6, 0, 2, 3, 5]]
    values = torch.tensor([[10, 11, 12, 13, 14, 15, 16]])
    assert apply(order, values).tolist() == [[11, 14, 16, 10, 12, 13, 15]]


def test_sink_first_order_no_sinks_and_all_sinks_are_identity():
    identity = [list(range(5))]
    assert sink_first_order(torch.zeros(1, 5, dtype=torch.bool)).tolist() == identity
    assert sink_first_order(torch.ones(1, 5, dtype=torch.bool)).tolist() == identity


def test_sink_first_order_rows_are_independent():
    mask = torch.tensor(
        [
            [False, False, False, True],
            [True, False, True, False],
            [False, False, False, False],
        ]
    )
    assert sink_first_order(mask).tolist() == [[3, 0, 1, 2], [0, 2, 1, 3], [0, 1, 2, 3]]


def test_sink_first_order_on_long_random_rows():
    # Longer rows than any sort's insertion-sort cutoff, so stability is really exercised.
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 300, generator=generator) < 0.1
    order = sink_first_order(mask)
    for row in range(4):
        sinks = mask[row].nonzero().flatten().tolist()
        rest = (~mask[row]).nonzero().flatten().tolist()
        assert order[row].tolist() == sinks + rest
