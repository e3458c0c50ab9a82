"""LSG on the tiny LLaVA-OneVision: newline slots, multi-image samples, L-sinks read raw.

* Keys of V-sink / other patch slots are scaled by c_sink / c_rest; the row-newline slots keep
  scale 1 like text unless ``scale_layout_slots`` (then c_rest); where the newlines are is read off
  the LLM's input (rows equal to the model's ``image_newline``), not from sinktrain.
* A two-image sample: each image's slots are numbered apart, each has its newline.
* The built-in LLaVA-OneVision profile's thresholds (tau_V 40, tau_L 50 on raw magnitudes), on the
  demo's channels, find the planted L-sinks in 3 groups; the same tau_L after RMSNorm is refused.
* Gate files remember ``scale_layout_slots``.
"""

import dataclasses
import io

import pytest
import torch
from PIL import Image

from sinktrain.backbones.profiles import SinkProfile, known_profile
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.eval_set import EvalSample
from sinktrain.data.scenes import demo_samples
from sinktrain.demo import ensure_demo_model
from sinktrain.demo import llava_onevision as demo
from sinktrain.errors import SinkTrainError
from sinktrain.eval.generate import prompt_inputs
from sinktrain.lsg.gate_file import gate_state, gating_from_checkpoint, meta_for, save_gates
from sinktrain.lsg.gating import LayerGating
from sinktrain.modeling.keys import L_SINK, ORDINARY, TEXT, V_SINK
from sinktrain.modeling.sinks import l_sink_mask

C_SINK, C_REST = 0.4, 1.6


@pytest.fixture(scope="module")
def model_dir():
    return ensure_demo_model("llava_onevision")


def scenes(count: int, seed: int = 5) -> list[Image.Image]:
    return [Image.open(io.BytesIO(png)) for _, png in demo_samples(4 * count, seed=seed) if png][:count]


def eval_samples(images) -> list[EvalSample]:
    return [EvalSample(f"s{i}", "other", [{"from": "human", "value": "<image>\nWhat is it?"}], "", (image,)) for i, image in enumerate(images)]


def llm_inputs(backbone) -> tuple[list, object]:
    store = []
    handle = backbone.language_model.register_forward_pre_hook(lambda m, a, k: store.append(k["inputs_embeds"].detach()), with_kwargs=True)
    return store, handle


@pytest.mark.parametrize("scale_layout_slots", [False, True])
def test_newline_keys_keep_scale_one_unless_asked(model_dir, scale_layout_slots):
    backbone = load_backbone(str(model_dir))
    gating = LayerGating(backbone, [2], scale_layout_slots=scale_layout_slots)
    gating.fixed[2] = torch.tensor([C_SINK, C_REST])
    images = [scenes(3)[0], scenes(3)[1].crop((0, 0, 96, 64)), scenes(3)[2].crop((0, 0, 40, 96))]
    inputs = prompt_inputs(backbone, eval_samples(images), backbone.default_template)
    store, handle = llm_inputs(backbone)
    with torch.no_grad():
        backbone.model(**inputs)
    handle.remove()
    newline = (store[0] == backbone.model.model.image_newline).all(-1)  # ground truth from the model's own packing
    state, scale = backbone.slots.state, gating.scales[2]
    assert torch.equal(newline, state.visual & ~state.patch)
    assert newline.sum(1).tolist() == [8, 6, 8]  # one per packed grid row: 8x8, 6x8 unpadded, 8x4
    assert state.v_sinks.any() and not (state.v_sinks & newline).any()
    assert torch.all(scale[state.v_sinks] == C_SINK)
    assert torch.all(scale[state.patch & ~state.v_sinks] == C_REST)
    assert torch.all(scale[newline] == (C_REST if scale_layout_slots else 1.0))
    assert torch.all(scale[~state.visual] == 1.0)


def test_a_two_image_sample_numbers_its_images_and_their_newlines(model_dir):
    backbone = load_backbone(str(model_dir))
    conversation = [{"from": "human", "value": "<image>\n<image>\nWhich image has more shapes?"}, {"from": "gpt", "value": "The first."}]
    example = backbone.encoder().encode(conversation, scenes(2))
    batch, _ = backbone.collator()([dict(example, lane=0, index=0, bad=False)])
    store, handle = llm_inputs(backbone)
    with torch.no_grad():
        backbone.forward(batch)
    handle.remove()
    state = backbone.slots.state
    tokens = demo.SIDE * demo.SIDE
    assert state.image[state.visual].tolist() == [0] * (tokens + 1) + [1] * (tokens + 1)  # one crop and a newline each
    newline = (store[0] == backbone.model.model.image_newline).all(-1)
    assert newline.sum() == 2 and torch.equal(newline, state.visual & ~state.patch)
    assert batch.vision["batch_num_images"].tolist() == [2]


def builtin_profile_on_the_demo() -> SinkProfile:
    """The built-in LLaVA-OneVision profile (SigLIP-SO400M + Qwen2-7B: tau_V 40, tau_L 50 on raw
    magnitudes) with the demo's channels and widths in place of the 7B model's."""
    builtin = known_profile("siglip-so400m-14-384", "qwen2-7b")
    assert (builtin.tau_v, builtin.tau_l, builtin.llm_rms_norm, builtin.vit_layer) == (40.0, 50.0, False, -1)
    return dataclasses.replace(
        builtin, vit_dims=[demo.SINK_DIM], llm_dims=list(demo.LLM_SINK_DIMS), hidden_size_vit=demo.VIT_HIDDEN, hidden_size_llm=demo.LLM_HIDDEN
    )


def test_the_builtin_profile_finds_the_planted_raw_l_sinks_in_three_groups(model_dir):
    profile = builtin_profile_on_the_demo()
    backbone = load_backbone(str(model_dir), profile=profile)
    gating = LayerGating(backbone, [2, 3], groups=3)
    inputs = prompt_inputs(backbone, eval_samples(scenes(12)), backbone.default_template)
    captured = {}
    mlp = backbone.decoder_layers()[demo.L_SINK_LAYER].mlp
    hook = mlp.gate_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("g", o[..., demo.LLM_NEURON]))
    with torch.no_grad():
        hidden = backbone.model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    state = backbone.slots.state
    assert state.v_sinks.sum() >= 12
    # Ground truth: what the planted LLM neuron writes into the L-sink dims, silu(g) * g * gain.
    # It fires by degrees, so slots it writes over 2 tau_L into must be L-sinks and slots under
    # tau_L / 2 must not; the few in between may go either way.
    written = torch.nn.functional.silu(captured["g"]) * captured["g"] * demo.L_SINK_GAIN
    candidates = state.patch & ~state.v_sinks
    must, may = candidates & (written > 2 * profile.tau_l), candidates & (written > profile.tau_l / 2)
    assert must.sum() >= 20 and must.any(1).sum() >= 3  # the fixture has L-sinks to find (bright backgrounds)
    assert (may & ~must).sum() <= must.sum() // 10  # and few undecided ones
    for layer in (2, 3):  # the neuron is in layer 1's MLP: L-sinks enter layers 2 and 3
        found = l_sink_mask(hidden[layer], state.patch, state.v_sinks, profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
        assert not (must & ~found).any() and not (found & ~may).any(), layer
        groups = gating._groups_at(hidden[layer], state)
        assert torch.equal(groups == L_SINK, found) and torch.equal(groups == V_SINK, state.v_sinks)
        assert torch.equal(groups == ORDINARY, state.patch & ~found & ~state.v_sinks)
        assert torch.equal(groups == TEXT, ~state.patch)


def test_the_same_thresholds_after_rmsnorm_are_refused():
    """After weightless RMSNorm no channel of a 128-wide LLM exceeds sqrt(128) ~ 11: tau_L 50 could never fire."""
    with pytest.raises(SinkTrainError, match="RMS"):
        dataclasses.replace(builtin_profile_on_the_demo(), llm_rms_norm=True)


def test_gate_files_remember_the_newline_setting(model_dir, tmp_path):
    backbone = load_backbone(str(model_dir))
    gating = LayerGating(backbone, [1], scale_layout_slots=True)
    save_gates(tmp_path, gate_state(gating), meta_for(gating))
    gating.remove()
    assert gating_from_checkpoint(load_backbone(str(model_dir)), tmp_path).scale_layout_slots
