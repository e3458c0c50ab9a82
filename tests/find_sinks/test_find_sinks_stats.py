"""The find_sink_dims statistics themselves, no model: counts match brute force, gaps, raw-free
parts, and the tenfold L-sink jump that flags a threshold artefact.
Run:
    python -m pytest tests/find_sinks/test_find_sinks_stats.py -q
"""

import numpy as np
import torch

from sinktrain.find_sinks.analyse import threshold_artefact_layers
from sinktrain.find_sinks.bins import NUM_BINS, bin_of, edges
from sinktrain.find_sinks.select import widest_gap
from sinktrain.find_sinks.stats import COUNT_CAP, PartStats, ReadLayerStats


def test_sinks_per_image_counts_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(5, 40, 3, generator=generator) * torch.logspace(-2, 3, 40).view(1, 40, 1)
    stats = ReadLayerStats.empty(width=3, device="cpu")
    stats.add(hidden[:2])
    stats.add(hidden[2:])  # two batches add up
    counts = stats.per_image()  # (D, B, COUNT_CAP + 1)
    bins = bin_of(hidden)  # (images, tokens, D)
    for dim in range(3):
        for b in range(0, NUM_BINS, 7):
            above = (bins[..., dim] >= b).sum(dim=1).clamp(max=COUNT_CAP)
            expected = torch.bincount(above, minlength=COUNT_CAP + 1)
            assert torch.equal(counts[dim, b].long(), expected), (dim, b)


def test_widest_gap_sits_above_the_bulk():
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    counts[100:110] = 50  # the bulk
    counts[112] = 1  # a narrow gap inside the bulk's tail
    counts[150:153] = 3  # sinks, after a wide gap
    gap = widest_gap(counts, max_token_fraction=0.1)
    assert (gap.low_bin, gap.high_bin) == (113, 150)
    assert edges()[113] < gap.tau < edges()[150]
    assert widest_gap(counts, max_token_fraction=0.001) is None  # too many tokens above every gap


def test_llm_part_without_raw_histogram_keeps_everything_else():
    """The L-sink part counts only the histogram tau_L is set on (normed by default): peaks, token
    counts and the normed histogram are the same as with the raw histogram counted too."""
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 3, 10, 8, generator=generator) * torch.logspace(-1, 2, 8)  # (layers, images, tokens, D)
    keep = torch.rand(3, 10, generator=generator) > 0.2
    both = PartStats.empty(4, 8, "cpu", normed=True, raw=True)
    normed_only = PartStats.empty(4, 8, "cpu", normed=True, raw=False)
    both.add(1, hidden.clone(), keep)
    normed_only.add(1, hidden.clone(), keep)
    assert normed_only.hist is None and normed_only.image_max is None
    for name in ("peak", "tokens", "normed"):
        assert torch.equal(getattr(both, name), getattr(normed_only, name)), name
    assert torch.equal(both.tokens[1:3], torch.full((2,), int(keep.sum())))
    kept = hidden.abs().masked_fill(~keep.unsqueeze(-1), 0).amax(dim=(1, 2))
    assert torch.equal(normed_only.peak[1:3], kept)


def test_threshold_artefact_layers_flag_tenfold_jumps():
    """LLaVA-OneVision in the LSG paper: a few L-sinks per layer, then the raw threshold fires on
    ordinary tokens from L19 on; the deeper layers' further growth is no new jump."""
    per_layer = [0, 0, 0, 0] + [3.0] * 15 + [80.0, 150.0, 600.0]
    assert threshold_artefact_layers(per_layer) == [19]
    assert threshold_artefact_layers([0, 0, 2.4, 2.4, 62.0]) == [4]
    assert threshold_artefact_layers([1.0, 10.0, 100.1]) == [2]  # "more than" 10x: layer 1 (exactly 10x) is no jump


def test_threshold_artefact_layers_onset_and_floor():
    assert threshold_artefact_layers([0, 0, 7.0, 7.0, 6.5]) == []  # L-sinks emerging (VAR: from layer 2 on)
    assert threshold_artefact_layers([0, 3.0, 0, 0.5]) == []  # 0 -> 0.5: below 10 x the floor 0.1
    assert threshold_artefact_layers([0, 3.0, 0, 0.5], floor=0.0) == [3]
    assert threshold_artefact_layers([0, 3.0, 0.01, 0.5, 40.0]) == [4]  # 0.5 -> 40
    assert threshold_artefact_layers([]) == [] and threshold_artefact_layers([0, 0]) == []
    assert threshold_artefact_layers(np.array([0.0, 1.0, 20.0])) == [2]
