"""DualMLPConnector with a connector that takes several inputs per token (DeepSeek-VL-Hybrid's aligner
takes SigLIP's and SAM's features): both inputs of a token go through the same projector, the
sink rule sees them all, and with f_sink = f_non it equals the stock connector."""

import copy

import torch
from torch import nn

from sinktrain.modeling.connector import DualMLPConnector


class TwoInputAligner(nn.Module):
    """The shape of DeepseekVLHybridAligner: one projection per input, concatenated, then a projection."""

    def __init__(self, low: int, high: int, out: int):
        super().__init__()
        self.low, self.high, self.proj = nn.Linear(low, out // 2), nn.Linear(high, out // 2), nn.Linear(out, out)

    def forward(self, low_res: torch.Tensor, high_res: torch.Tensor) -> torch.Tensor:
        return self.proj(nn.functional.gelu(torch.cat([self.high(high_res), self.low(low_res)], dim=-1)))


def sink_mask_from_both(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return ((low[..., 0] > 10) | (high[..., 0] > 10)).reshape(-1)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    low, high = torch.randn(2, 6, 8, generator=generator), torch.randn(2, 6, 12, generator=generator)
    low[0, 1, 0], high[1, 4, 0] = 50.0, 50.0  # one sink seen by each branch
    return low, high


def test_neutral_two_input_dual_mlp_equals_the_stock_connector():
    torch.manual_seed(0)
    stock = TwoInputAligner(8, 12, 16)
    dual = DualMLPConnector(copy.deepcopy(stock), stock, sink_mask_from_both, group=1)
    low, high = inputs()
    torch.testing.assert_close(dual(low, high), stock(low, high), rtol=0, atol=1e-6)


def test_each_token_goes_through_one_projector_with_both_inputs():
    torch.manual_seed(0)
    f_sink, f_non = TwoInputAligner(8, 12, 16), TwoInputAligner(8, 12, 16)
    dual = DualMLPConnector(f_sink, f_non, sink_mask_from_both, group=1)
    low, high = inputs()
    out = dual(low, high)
    mask = sink_mask_from_both(low, high).view(2, 6)
    assert mask.sum() == 2
    torch.testing.assert_close(out[mask], f_sink(low[mask], high[mask]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[~mask], f_non(low[~mask], high[~mask]), rtol=0, atol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dual.parameters())
