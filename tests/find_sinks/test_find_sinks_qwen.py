"""tools/find_sink_dims.py on the tiny Qwen2-VL and Qwen2.5-VL: the planted sinks are recovered.

The demos (sinktrain.demo.qwen2_vl) plant V-sinks on the scenes' 16-pixel magenta corner watermark
(ViT channel SINK_DIM, written by one MLP neuron of block SINK_LAYER and carried to the merger's
input, the last block's output: layer -1) and L-sinks on blue objects (LLM channels LLM_SINK_DIMS,
written by one MLP neuron of LLM layer L_SINK_LAYER), with the same massive LLM dims at each
``<|im_start|>``. The watermark fills one 2x2-patch merger group, so an image has up to 4 V-sink
patches but about one V-sink slot. Ground truth is read from the planted neurons with hooks. The
tool runs (in this process) on 64 demo images, once per family.
Run:
    python -m pytest tests/find_sinks/test_find_sinks_qwen.py -q
"""

from pathlib import Path

import pytest
import torch

from sinktrain.backbones.profiles import load_profile
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo import demo_data_pattern, ensure_demo_model
from sinktrain.demo import qwen2_vl as planted
from sinktrain.find_sinks.images import PromptEncoder, shard_items
from sinktrain.modeling.sinks import l_sink_mask, v_sink_mask

from tool_runner import run_tool_here

IMAGES = 64
NAMES = ["qwen2_vl", "qwen2_5_vl"]
LLM_NAMES = NAMES


@pytest.fixture(scope="module")
def tool_runs(tmp_path_factory):
    """name -> (profile path, printed summary): the tool on demo:NAME, run once per family."""
    runs = {}

    def get(name: str):
        if name not in runs:
            out = tmp_path_factory.mktemp(name) / f"{name}.json"
            printed = run_tool_here("find_sink_dims.py", "--model", f"demo:{name}", "--num_images", str(IMAGES), "--out", str(out))
            runs[name] = out, printed
        return runs[name]

    return get


@pytest.fixture(scope="module")
def truth():
    """name -> what the planted neurons do on the profiled images (cached per family)."""
    cache = {}

    def get(name: str, profile_path: Path):
        if name not in cache:
            cache[name] = planted_truth(name, profile_path)
        return cache[name]

    return get


def planted_truth(name: str, profile_path: Path) -> dict:
    """One forward of the profiled images through the profiled backbone, hooks on the planted
    neurons and the merger's input; ``backbone.slots`` gives the V-sink slots by the profile."""
    backbone = load_backbone(str(ensure_demo_model(name)), sink_profile=str(profile_path))
    items = list(shard_items(demo_data_pattern(), IMAGES, rank=0, world_size=1))
    input_ids, attention_mask, vision = PromptEncoder(backbone, backbone.default_template)(items)
    captured = {}
    mlp = backbone.vision_layers()[planted.SINK_LAYER].mlp
    neuron_in = mlp.fc1 if hasattr(mlp, "fc1") else mlp.gate_proj  # Qwen2-VL / Qwen2.5-VL
    hooks = [
        neuron_in.register_forward_hook(lambda m, i, out: captured.__setitem__("vit", out[..., planted.SINK_NEURON].detach())),
        backbone.connector.register_forward_pre_hook(lambda m, args: captured.__setitem__("features", args[0].detach())),
        backbone.decoder_layers()[planted.L_SINK_LAYER].mlp.gate_proj.register_forward_hook(
            lambda m, i, out: captured.__setitem__("gate", out[..., planted.LLM_NEURON].detach())),
    ]
    with torch.no_grad():
        hidden = backbone.model(**backbone.model_inputs(input_ids, attention_mask, vision), output_hidden_states=True).hidden_states
    for hook in hooks:
        hook.remove()
    state = backbone.slots.state
    return {**captured, "hidden": hidden, "visual": state.visual, "v_sinks": state.v_sinks, "images": len(items),
            "grid": vision["image_grid_thw"], "group": backbone.connector_group}


# -- the vision side: both families ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_vit_dim_read_before_the_merger_per_patch_and_per_slot(tool_runs, name):
    out, printed = tool_runs(name)
    profile = load_profile(out)
    vit = profile.stats["vit"]
    assert profile.vit_dims == [planted.SINK_DIM] and profile.vit_layer == -1 and profile.criterion == "dim_threshold"
    assert vit["read_layer_index"] == planted.VIT_LAYERS  # the last block's output feeds the merger
    assert (profile.hidden_size_vit, profile.hidden_size_llm) == (planted.VIT_HIDDEN, planted.LLM_HIDDEN)
    assert vit["gap"]["lower"] < profile.tau_v < vit["gap"]["upper"] and vit["gap"]["decades"] > 1
    assert profile.stats["images"] == IMAGES and sum(vit["sinks_per_image_histogram"]) == IMAGES
    # per patch: up to 4 per watermark (less where an object covers part of it); per slot: ~1
    assert 2.0 <= vit["sinks_per_image"] <= 4.0 and vit["sinks_per_image_histogram"][0] <= IMAGES // 10
    assert 0.9 <= vit["sink_slots_per_image"] <= 1.1 and sum(vit["sink_slots_per_image_histogram"]) == IMAGES
    assert vit["sink_slots_per_image"] < vit["sinks_per_image"]
    assert "V-sink LLM slots" in printed and "[37]" in printed and "wrote" in printed


@pytest.mark.parametrize("name", NAMES)
def test_tau_v_classifies_exactly_the_planted_patches_and_slots(tool_runs, truth, name):
    out, _ = tool_runs(name)
    profile, seen = load_profile(out), truth(name, out)
    fired = seen["vit"] > 0  # the planted ViT neuron, per patch (the merger's flat input order)
    found = v_sink_mask(seen["features"], profile.criterion, profile.tau_v, profile.vit_dims)
    assert torch.equal(found, fired)
    assert profile.stats["vit"]["sinks_per_image"] == pytest.approx(fired.sum().item() / IMAGES, rel=1e-3)
    slots = int(seen["v_sinks"].sum())  # a slot is a V-sink when any of its 4 patches is
    assert slots == int(fired.view(-1, seen["group"]).any(dim=-1).sum())
    assert profile.stats["vit"]["sink_slots_per_image"] == pytest.approx(slots / IMAGES, rel=1e-3)


# -- the LLM side --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LLM_NAMES)
def test_llm_dims_are_the_planted_ones_and_show_at_delimiters(tool_runs, name):
    out, printed = tool_runs(name)
    profile = load_profile(out)
    llm = profile.stats["llm"]
    assert set(profile.llm_dims) == set(planted.LLM_SINK_DIMS) and len(profile.llm_dims) == 2 and profile.llm_rms_norm
    assert llm["gap"]["lower"] < profile.tau_l < llm["gap"]["upper"]
    assert llm["first_layer"] >= planted.L_SINK_LAYER + 1  # written by layer 1's MLP
    assert llm["l_sinks_per_layer"][:2] == [0.0, 0.0] and min(llm["l_sinks_per_layer"][2:]) >= 0.5
    for dim in planted.LLM_SINK_DIMS:  # <|im_start|> (the first token, each turn's delimiter) and blue objects
        where = llm["where"][str(dim)]
        assert min(where[c]["x_median"] for c in ("first token", "delimiters", "visual")) >= 100
        assert f"LLM dim {dim} shows at: first token, delimiters, visual" in printed


@pytest.mark.parametrize("name", LLM_NAMES)
def test_tau_l_classifies_the_planted_l_sinks(tool_runs, truth, name):
    """Every visual non-V-sink slot where the planted LLM neuron fires is an L-sink from layer 2
    on, and nothing else is but a slot half inside a blue object (its L-marker neither on nor off;
    such a slot's hidden state is tiny, so after RMSNorm the neuron's little output is massive)."""
    out, _ = tool_runs(name)
    profile, seen = load_profile(out), truth(name, out)
    visual, v_sinks = seen["visual"], seen["v_sinks"]
    must = (seen["gate"] > 0) & visual & ~v_sinks
    marker = seen["hidden"][0][..., planted.L_MARKER_DIM]  # the merger's L-marker: ~-2 off, >3 on
    may = must | ((marker > planted.L_MARKER_OFFSET / 2) & visual & ~v_sinks)
    assert must.sum() >= IMAGES // 2 and (may & ~must).sum() <= IMAGES // 16
    for layer, hidden in enumerate(seen["hidden"][: planted.LLM_LAYERS]):
        found = l_sink_mask(hidden, visual, v_sinks, profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
        if layer <= planted.L_SINK_LAYER:
            assert not found.any(), layer
        else:
            assert not (must & ~found).any() and not (found & ~may).any(), layer
    per_layer = profile.stats["llm"]["l_sinks_per_layer"]
    assert must.sum().item() / IMAGES * 0.999 <= per_layer[2] <= may.sum().item() / IMAGES * 1.001  # 4 digits
