"""tools/find_sink_dims.py on the tiny DeepSeek-VL and DeepSeek-VL-Hybrid: the planted sinks are recovered.

DeepSeek-VL's aligner reads SigLIP after its final LayerNorm. The demo's sinks are ~400 before the
norm and ~63 after it (sinktrain.demo.deepseek_vl): the tool must judge the dim on the residual
stream (the norm bounds every channel) and set tau_V on the post-norm tensor the aligner receives,
so its V-sinks are exactly the planted ones there. On Hybrid the SAM branch (the aligner's second
input) is measured on its own: its planted dim, a threshold in its own gap, SAM's sinks exactly,
a summary row and plot panels of its own, and a profile whose SAM facts the backbone accepts.
"""

import re
from pathlib import Path

import pytest
import torch

from sinktrain.backbones.profiles import load_profile
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo import deepseek_vl as planted, deepseek_vl_hybrid as hybrid, demo_data_pattern, ensure_demo_model
from sinktrain.find_sinks.images import PromptEncoder, shard_items
from sinktrain.modeling.sinks import v_sink_mask

from tool_runner import run_tool_here

IMAGES = 48
SLOTS = (planted.IMAGE_SIZE // planted.PATCH) ** 2


def run_tool(name: str, out: Path) -> tuple:
    printed = run_tool_here("find_sink_dims.py", "--model", f"demo:{name}", "--num_images", str(IMAGES), "--out", str(out))
    return load_profile(out), printed, out


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return run_tool("deepseek_vl", tmp_path_factory.mktemp("deepseek") / "profile.json")


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
    return run_tool("deepseek_vl_hybrid", tmp_path_factory.mktemp("hybrid") / "profile.json")


def aligner_inputs(name: str, profile) -> tuple:
    """The profiled images' aligner inputs and the planted steps' outputs (SigLIP's, SAM's)."""
    backbone = load_backbone(str(ensure_demo_model(name)), profile=profile)
    items = list(shard_items(demo_data_pattern(), IMAGES, rank=0, world_size=1))
    input_ids, attention_mask, vision = PromptEncoder(backbone, backbone.default_template)(items)
    siglip = backbone.vision_layers()[planted.SINK_LAYER].mlp
    seen = {}
    hooks = [
        siglip.fc1.register_forward_hook(lambda m, i, out: seen.__setitem__("siglip", planted.planted_v_sink_value(siglip, out))),
        backbone.connector.register_forward_pre_hook(lambda m, args: seen.__setitem__("inputs", args)),
    ]
    if name.endswith("hybrid"):
        sam = backbone.model.model.high_res_vision_model.vision_encoder.layers[0].mlp
        hooks.append(sam.lin1.register_forward_hook(lambda m, i, out: seen.__setitem__("sam", hybrid.planted_sam_value(sam, out))))
    with torch.no_grad():
        backbone.model(**backbone.model_inputs(input_ids, attention_mask, vision))
    for hook in hooks:
        hook.remove()
    return seen


def test_deepseek_vl_sinks_judged_before_the_norm_and_thresholded_after_it(plain_run):
    profile, printed, _ = plain_run
    vit = profile.stats["vit"]
    assert profile.vit_dims == [planted.SINK_DIM] and profile.vit_layer == -1
    assert vit["read_layer_index"] == planted.VIT_LAYERS + 1  # post_layernorm's output
    assert vit["gap"]["lower"] < planted.TAU_V < vit["gap"]["upper"] < planted.SINK_GAIN / 4  # the post-norm values
    assert set(profile.llm_dims) == set(planted.LLM_SINK_DIMS) and not profile.hybrid
    seen = aligner_inputs("deepseek_vl", profile)
    fired = seen["siglip"] >= planted.SINK_GAIN / 2
    found = v_sink_mask(seen["inputs"][0], profile.criterion, profile.tau_v, profile.vit_dims)
    assert torch.equal(found, fired) and fired.sum() >= IMAGES
    assert "SAM" not in printed and "layer -1" in printed


def test_hybrid_sam_branch_measured_on_its_own(hybrid_run):
    profile, printed, out = hybrid_run
    high = profile.stats["high_res"]
    assert profile.vit_dims == [planted.SINK_DIM] and profile.high_res_dims == [hybrid.HIGH_RES_SINK_DIM]
    assert profile.hidden_size_high_res == 4 * hybrid.SAM_CHANNELS and profile.sink_branch == "low_res"
    assert high["gap"]["lower"] < hybrid.TAU_HIGH_RES < high["gap"]["upper"]
    seen = aligner_inputs("deepseek_vl_hybrid", profile)
    rows = torch.tensor([list(hybrid.sam_position(slot)) for slot in range(SLOTS)])
    sam_fired = seen["sam"][:, rows[:, 0], rows[:, 1]] >= hybrid.SAM_GAIN / 2  # (images, slots)
    found = v_sink_mask(seen["inputs"][1], profile.criterion, profile.tau_high_res, profile.high_res_dims)
    assert torch.equal(found, sam_fired) and sam_fired.sum() >= IMAGES
    assert high["sinks_per_image"] == pytest.approx(sam_fired.sum().item() / IMAGES, rel=1e-3)
    siglip = v_sink_mask(seen["inputs"][0], profile.criterion, profile.tau_v, profile.vit_dims)
    assert torch.equal(siglip, seen["siglip"] >= planted.SINK_GAIN / 2)
    assert re.search(rf"SAM +\[{hybrid.HIGH_RES_SINK_DIM}\]", printed)
    plots = out.parent / "profile_plots"
    assert (plots / "histogram.png").stat().st_size > 0 and (plots / "sinks_per_image.png").stat().st_size > 0


def test_the_written_hybrid_profile_defines_sinks_on_either_branch(hybrid_run, tmp_path):
    _, _, out = hybrid_run
    text = out.read_text().replace('"sink_branch": "low_res"', '"sink_branch": "either"')
    either = tmp_path / "either.json"
    either.write_text(text)
    backbone = load_backbone(str(ensure_demo_model("deepseek_vl_hybrid")), sink_profile=str(either))
    assert backbone.sink_profile.sink_branch == "either" and backbone.sink_profile.high_res_dims == [hybrid.HIGH_RES_SINK_DIM]
