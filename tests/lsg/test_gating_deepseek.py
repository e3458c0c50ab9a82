"""LSG on the tiny DeepSeek-VL and DeepSeek-VL-Hybrid: three groups find exactly the planted sinks.

V-sinks come from SigLIP's post-norm tensor (and on Hybrid, with ``sink_branch`` "either", from the
SAM branch too); L-sinks are the visual slots where the planted LLM neuron of layer L_SINK_LAYER
fires (ground truth read off the neuron, not sinktrain's rule), and not V-sinks. The gates' groups
at layers 2 and 3 must be exactly those, and every other visual slot ordinary.
"""

import dataclasses
import io

import pytest
import torch
from PIL import Image

from sinktrain.backbones.registry import load_backbone
from sinktrain.data.eval_set import EvalSample
from sinktrain.data.scenes import demo_samples
from sinktrain.demo import deepseek_vl as demo, deepseek_vl_hybrid as hybrid, ensure_demo_model
from sinktrain.eval.generate import prompt_inputs
from sinktrain.lsg.gating import LayerGating

from gate_checks import assert_three_groups

CASES = [("deepseek_vl", "low_res"), ("deepseek_vl_hybrid", "low_res"), ("deepseek_vl_hybrid", "either")]


def gated_backbone(name: str, branch: str):
    model_dir = ensure_demo_model(name)
    backbone = load_backbone(str(model_dir))
    if branch != backbone.sink_profile.sink_branch:
        profile = dataclasses.replace(backbone.sink_profile, sink_branch=branch)
        backbone = load_backbone(str(model_dir), profile=profile)
    return backbone, LayerGating(backbone, [2, 3], groups=3)


@pytest.mark.parametrize("name, branch", CASES)
def test_three_groups_find_exactly_the_planted_sinks(name, branch):
    backbone, gating = gated_backbone(name, branch)
    images = [Image.open(io.BytesIO(png)).convert("RGB") for _, png in demo_samples(40, seed=5) if png][:24]
    samples = [EvalSample(str(i), "colour", [{"from": "human", "value": "<image>\nWhat is it?"}], "", (image,)) for i, image in enumerate(images)]
    inputs = prompt_inputs(backbone, samples, backbone.default_template)
    captured = {}
    mlp = backbone.decoder_layers()[demo.L_SINK_LAYER].mlp
    hook = mlp.gate_proj.register_forward_hook(lambda m, i, out: captured.__setitem__("neuron", out[..., demo.LLM_NEURON]))
    with torch.no_grad():
        hidden = backbone.model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    state = backbone.slots.state
    truth = (captured["neuron"] > 0) & state.patch & ~state.v_sinks  # the marker lifted: the neuron fired
    assert truth.sum() >= 24 and state.v_sinks.sum() >= 24  # the fixture has sinks of both kinds
    if branch == "either":  # SAM's sinks join SigLIP's
        slots = state.v_sinks[state.visual].view(len(images), -1)
        assert slots[:, list(hybrid.HIGH_RES_SLOTS)].any(dim=1).all()
    assert_three_groups(backbone, gating, hidden, truth, (2, 3))
