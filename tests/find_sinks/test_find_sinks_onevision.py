"""tools/find_sink_dims.py on the tiny LLaVA-OneVision: the planted sinks are recovered.

The demo (sinktrain.demo.llava_onevision) plants V-sinks in SigLIP's first layer (channel SINK_DIM,
a step on two crop corners; the residual carries it to the last layer, which the projector reads)
and L-sinks read raw (LLM channels LLM_SINK_DIMS, written by LLM layer L_SINK_LAYER on one marked
token per crop). The tool measures per crop token (the projector's rows: base crop and tiles) and
per LLM slot; the paper's thresholds for SO400M and LLaVA-OV (tau_V 40, tau_L 50 raw, the built-in
profile) must fall in the empty gaps it finds. Ground truth is read from the planted neurons.
Run:
    python -m pytest tests/find_sinks/test_find_sinks_onevision.py -q
"""


import pytest
import torch

from sinktrain.backbones.profiles import known_profile, load_profile
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo import demo_data_pattern, ensure_demo_model
from sinktrain.demo import llava_onevision as planted
from sinktrain.data.shards import write_shards
from sinktrain.find_sinks.images import GENERIC_QUESTION, PromptEncoder, shard_items
from sinktrain.modeling.sinks import l_sink_mask, v_sink_mask

from stream_helpers import chat, png
from tool_runner import run_tool_here

IMAGES = 48
CROPS_PER_SCENE = 5  # a 96-pixel demo scene: the base crop and 2x2 tiles
BUILTIN = known_profile("siglip-so400m-14-384", "qwen2-7b")


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("onevision") / "profile.json"
    printed = run_tool_here("find_sink_dims.py", "--model", "demo:llava_onevision", "--num_images", str(IMAGES), "--out", str(out))
    return load_profile(out), printed


@pytest.fixture(scope="module")
def truth(tool_run):
    """One forward of the profiled images, hooks on the planted neurons and the projector's input."""
    profile, _ = tool_run
    backbone = load_backbone(str(ensure_demo_model("llava_onevision")), profile=profile)
    items = list(shard_items(demo_data_pattern(), IMAGES, rank=0, world_size=1))
    input_ids, attention_mask, vision = PromptEncoder(backbone, backbone.default_template)(items)
    vit_mlp = backbone.vision_layers()[planted.SINK_LAYER].mlp
    llm_mlp = backbone.decoder_layers()[planted.L_SINK_LAYER].mlp
    seen = {}
    hooks = [
        vit_mlp.fc1.register_forward_hook(lambda m, i, out: seen.__setitem__("vit", planted.planted_v_sink_value(vit_mlp, out).detach())),
        backbone.connector.register_forward_pre_hook(lambda m, args: seen.__setitem__("features", args[0].detach())),
        llm_mlp.gate_proj.register_forward_hook(lambda m, i, out: seen.__setitem__("gate", out[..., planted.LLM_NEURON].detach())),
    ]
    with torch.no_grad():
        hidden = backbone.model(**backbone.model_inputs(input_ids, attention_mask, vision), output_hidden_states=True).hidden_states
    for hook in hooks:
        hook.remove()
    state = backbone.slots.state
    return {**seen, "hidden": hidden, "visual": state.visual, "patch": state.patch, "v_sinks": state.v_sinks}


def test_vit_dim_from_the_first_layer_and_exact_per_crop_token(tool_run, truth):
    profile, printed = tool_run
    vit = profile.stats["vit"]
    assert profile.vit_dims == [planted.SINK_DIM] and profile.vit_layer == -1 and profile.criterion == "dim_threshold"
    assert vit["read_layer_index"] == planted.VIT_LAYERS  # the last layer's output feeds the projector
    assert vit["dims"][0]["first_layer"] == 1  # massive from the first encoder layer's output on
    assert profile.stats["visual_tokens_per_image"] == CROPS_PER_SCENE * planted.SIDE**2  # counted per crop token
    assert vit["gap"]["lower"] < BUILTIN.tau_v < vit["gap"]["upper"] and vit["gap"]["decades"] > 1
    fired = truth["vit"] > planted.TAU_V  # the planted step, per crop token
    found = v_sink_mask(truth["features"], profile.criterion, profile.tau_v, profile.vit_dims)
    assert torch.equal(found, fired) and fired.sum() >= IMAGES * CROPS_PER_SCENE
    assert vit["sinks_per_image"] == pytest.approx(fired.sum().item() / IMAGES, rel=1e-3)
    assert "[37]" in printed and "wrote" in printed


def test_llm_dims_read_raw_and_exact_per_slot(tool_run, truth):
    profile, _ = tool_run
    llm = profile.stats["llm"]
    assert set(profile.llm_dims) == set(planted.LLM_SINK_DIMS) and not profile.llm_rms_norm and llm["values"] == "raw"
    assert llm["gap"]["lower"] < BUILTIN.tau_l < llm["gap"]["upper"]
    assert llm["dims"][0]["first_layer"] == planted.L_SINK_LAYER + 1
    visual, v_sinks = truth["visual"], truth["v_sinks"]
    must = (truth["gate"] > 0) & visual & ~v_sinks  # one marked token per crop, never a newline
    assert not (must & ~truth["patch"]).any() and must.sum() == IMAGES * CROPS_PER_SCENE
    for layer, hidden in enumerate(truth["hidden"][: planted.LLM_LAYERS]):
        found = l_sink_mask(hidden, visual, v_sinks, profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
        assert torch.equal(found, must if layer > planted.L_SINK_LAYER else torch.zeros_like(must)), layer
    assert llm["l_sinks_per_layer"][planted.L_SINK_LAYER + 1] == pytest.approx(CROPS_PER_SCENE, rel=1e-3)


def test_multi_image_samples_give_one_item_per_image(tmp_path, sinktrain_warnings):
    """Each image of a multi-image sample is profiled on its own (numbered in order, split over
    ranks like any image); a broken image is skipped with a warning that names it."""
    red, blue = png((96, 96)), png((40, 96), (30, 30, 200))
    shard = write_shards([
        ({"id": "one", "conversations": chat("<image>\nWhat colour?", "Red.")}, red, "png"),
        ({"id": "pair", "conversations": chat("<image>\n<image>\nWhich?", "The first.")}, [red, blue], ["png", "png"]),
        ({"id": "text", "conversations": chat("Hi?", "Hello.")}, None, None),
        ({"id": "broken", "conversations": chat("<image>\n<image>\nWhich?", "The first.")}, [red, blue[:40]], ["png", "png"]),
    ], str(tmp_path / "%06d.tar"), 10)[0]
    items = list(shard_items(shard, num_images=10, rank=0, world_size=1))
    assert [(item.image.size, item.question) for item in items] == [
        ((96, 96), "<image>\nWhat colour?"), ((96, 96), GENERIC_QUESTION), ((40, 96), GENERIC_QUESTION), ((96, 96), GENERIC_QUESTION),
    ]
    assert any("broken" in r.getMessage() and "undecodable image 1.png" in r.getMessage() for r in sinktrain_warnings.records)
    split = [[item.image.size for item in shard_items(shard, num_images=3, rank=rank, world_size=2)] for rank in (0, 1)]
    assert split == [[(96, 96), (40, 96)], [(96, 96)]]
