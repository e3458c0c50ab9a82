"""Each paper's V-sink rule by name (SinkProfile.with_rule): LSG's dimension threshold, DIYSink's
token L2 norm; DIYSink recipes default to DIYSink's where the profile knows its tau.

On every family's demo the two rules flag the same tokens (the demo taus sit in both histograms'
gaps), which is why DIYSink's numbers on the demos did not move when its default became the L2 rule."""

import dataclasses

import pytest
import torch

from sinktrain.backbones.profiles import known_profile
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.sinks import v_sink_mask

from families import collate, with_images


def connector_inputs(backbone, batch) -> list[torch.Tensor]:
    seen = []
    handle = backbone.connector.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        backbone.forward(batch)
    handle.remove()
    return seen


def test_both_rules_flag_the_same_tokens_on_the_demo(stock, scenes):
    lsg, diysink = stock.sink_profile.with_rule("lsg"), stock.sink_profile.with_rule("auto")
    assert diysink.criterion == "l2_norm" and diysink.tau_v == stock.sink_profile.tau_l2
    features = torch.cat([f.reshape(-1, f.shape[-1]) for f in connector_inputs(stock, collate(stock, with_images(scenes, 24)))])
    by_dims = v_sink_mask(features, lsg.criterion, lsg.tau_v, lsg.vit_dims)
    assert by_dims.sum() >= 24 and torch.equal(v_sink_mask(features, "l2_norm", diysink.tau_v), by_dims)
    norms = features.norm(dim=-1)
    assert norms[~by_dims].max() < diysink.tau_v / 1.3 and norms[by_dims].min() > 1.3 * diysink.tau_v  # margins both ways


def test_built_in_profiles_give_each_paper_its_rule():
    clip = known_profile("clip-vit-l-14-336", "llama-2-7b")
    assert (clip.criterion, clip.tau_v, clip.vit_dims) == ("dim_threshold", 60.0, [650])  # LSG Table S7
    diysink = clip.with_rule("auto")
    assert (diysink.criterion, diysink.tau_v) == ("l2_norm", 100.0) and clip.with_rule("lsg") is clip  # DIYSink Sec. 3
    siglip = known_profile("siglip-so400m-14-384", "qwen2-7b")
    assert siglip.with_rule("auto") is siglip  # no published L2 tau: the dimension rule stays
    with pytest.raises(SinkTrainError, match=r"no L2-norm threshold \(tau_l2\) for DIYSink's rule; pass --sink_rule lsg"):
        siglip.with_rule("diysink")


def test_rule_errors():
    l2_only = dataclasses.replace(known_profile("clip-vit-l-14-336", None), criterion="l2_norm", tau_v=100.0, vit_dims=[])
    assert l2_only.with_rule("diysink") is l2_only
    with pytest.raises(SinkTrainError, match=r"holds only an L2-norm rule .*pass --sink_rule diysink"):
        l2_only.with_rule("lsg")
    with pytest.raises(SinkTrainError, match=r"unknown sink rule 'l1'; use one of auto, diysink, lsg"):
        l2_only.with_rule("l1")
