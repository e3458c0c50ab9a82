"""DeepSeek-VL and DeepSeek-VL-Hybrid specifics on the tiny demos (the shared contract: test_contract.py).

Shown: V-sinks are read on SigLIP's post-norm output (the aligner's input), where the planted
sinks are large although the norm shrinks every token; on Hybrid each sink definition of the
profile (``sink_branch``: SigLIP, SAM, either) puts exactly its branch's planted sinks into the
slots, both image tensors equal the stock processor's, a text-only batch runs both branches and
the aligner's two inputs, and freezing the vision freezes SAM, its necks and alpha. Bad inputs: a
profile whose SigLIP and SAM facts are swapped (width mismatch), a Hybrid profile on DeepSeek-VL
(and on LLaVA), a profile read before the norm, a branch named without its facts, and a processor
whose image token count is not the model's. The real DeepSeek-VL-7B has no built-in profile (the
error names find_sink_dims) and takes the two-branch profile that tool writes.
"""

import dataclasses
import io
import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import DeepseekVLHybridConfig, LlamaConfig, SamVisionConfig, SiglipVisionConfig

from sinktrain.backbones.profiles import SinkProfile, save_profile
from sinktrain.backbones.registry import load_backbone, resolve_profile
from sinktrain.data.scenes import demo_samples
from sinktrain.demo import deepseek_vl as planted, deepseek_vl_hybrid as hybrid, ensure_demo_model
from sinktrain.errors import SinkTrainError

from families import collate, with_images
from families_deepseek import deepseek_planted_slots, deepseek_stock_inputs

BRANCHES = ("low_res", "high_res", "either")


@pytest.fixture(scope="module")
def hybrid_dir():
    return ensure_demo_model("deepseek_vl_hybrid")


@pytest.fixture(scope="module")
def plain_dir():
    return ensure_demo_model("deepseek_vl")


@pytest.fixture(scope="module")
def scenes():
    return [(record, Image.open(io.BytesIO(png)).convert("RGB") if png else None) for record, png in demo_samples(40, seed=2)]


def with_profile(model_dir, tmp_path, **changes) -> str:
    profile = tmp_path / "profile.json"
    base = load_backbone(str(model_dir)).sink_profile
    save_profile(SinkProfile(**{**dataclasses.asdict(base), **changes}), profile)
    return str(profile)


def sam_planted_slots(backbone, image) -> tuple[set[int], set[int]]:
    """Slots whose SAM grid position carries the planted SAM step (ground truth, no sinktrain rule)."""
    captured = {}
    encoder = backbone.model.model.high_res_vision_model.vision_encoder
    mlp = encoder.layers[0].mlp
    hook = mlp.lin1.register_forward_hook(lambda module, args, out: captured.__setitem__("lin1", out.detach()))
    with torch.no_grad():
        backbone.model.model.high_res_vision_model(backbone.image_inputs([image])[0]["high_res_pixel_values"])
    hook.remove()
    written = hybrid.planted_sam_value(mlp, captured["lin1"][0])
    values = torch.stack([written[hybrid.sam_position(slot)] for slot in range(backbone.slots_per_image({"pixel_values": torch.zeros(1)}, 0)[0])])
    return set((values >= hybrid.SAM_GAIN / 2).nonzero().flatten().tolist()), set((values > hybrid.SAM_GAIN / 100).nonzero().flatten().tolist())


def test_sinks_are_read_after_siglips_final_norm(plain_dir, scenes):
    backbone = load_backbone(str(plain_dir))
    layers = backbone.vision_layers()
    assert layers[-1] is backbone.vision_tower.post_layernorm and backbone.sink_profile.vit_layer == -1
    inputs = {}
    hook = backbone.connector.register_forward_pre_hook(lambda module, args: inputs.__setitem__("aligner", args[0]))
    post = layers[-1].register_forward_hook(lambda module, args, out: inputs.__setitem__("post", out))
    before = layers[-1].register_forward_pre_hook(lambda module, args: inputs.__setitem__("pre", args[0]))
    with torch.no_grad():
        backbone.forward(collate(backbone, with_images(scenes, 8)))
    for handle in (hook, post, before):
        handle.remove()
    assert torch.equal(inputs["post"], inputs["aligner"])  # the tensor the connector receives
    sinks = backbone.slots.state.v_sinks[backbone.slots.state.visual].view(8, -1)
    assert sinks.any()
    channel = planted.SINK_DIM
    assert inputs["aligner"][..., channel][sinks].abs().min() > planted.TAU_V > inputs["aligner"][..., channel][~sinks].abs().max()
    assert inputs["pre"][..., channel][sinks].abs().min() > 5 * inputs["aligner"][..., channel][sinks].abs().max()  # the norm rescales


@pytest.mark.parametrize("branch", BRANCHES)
def test_each_sink_definition_marks_its_branchs_planted_sinks(hybrid_dir, scenes, tmp_path, branch):
    backbone = load_backbone(str(hybrid_dir), sink_profile=with_profile(hybrid_dir, tmp_path, sink_branch=branch))
    chosen = with_images(scenes, 16)
    with torch.no_grad():
        backbone.forward(collate(backbone, chosen))
    state = backbone.slots.state
    seen = {"low_res": 0, "high_res": 0}
    for row, (_, image) in enumerate(chosen):
        found = set(state.v_sinks[row][state.visual[row]].nonzero().flatten().tolist())
        truth = {"low_res": deepseek_planted_slots(backbone, image), "high_res": sam_planted_slots(backbone, image)}
        used = BRANCHES[:2] if branch == "either" else (branch,)
        must = set().union(*(truth[b][0] for b in used))
        may = set().union(*(truth[b][1] for b in used))
        assert must <= found <= may, (row, branch, found, must, may)
        for b in used:
            seen[b] += len(truth[b][0])
    assert all(seen[b] >= 6 for b in (BRANCHES[:2] if branch == "either" else (branch,))), seen
    assert not set(hybrid.HIGH_RES_SLOTS) & set(planted.CANDIDATES)  # the branches' sinks are told apart


def test_both_image_tensors_equal_the_stock_processors(hybrid_dir, scenes):
    backbone = load_backbone(str(hybrid_dir))
    images = [image for _, image in with_images(scenes, 3)]
    ours, slots = backbone.image_inputs(images)
    theirs = deepseek_stock_inputs(backbone, "What is it?", images)
    assert set(ours) == {"pixel_values", "high_res_pixel_values"}
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key])
    assert slots == [int((theirs["input_ids"] == backbone.image_token_id).sum()) // 3] * 3


def test_text_only_batch_runs_both_branches_and_the_aligners_two_inputs(hybrid_dir, scenes):
    backbone = load_backbone(str(hybrid_dir))
    calls = []
    parts = [backbone.vision_tower, backbone.model.model.high_res_vision_model, backbone.model.model.high_res_vision_neck]
    handles = [part.register_forward_pre_hook(lambda module, args, index=i: calls.append(index)) for i, part in enumerate(parts)]
    handles.append(backbone.connector.register_forward_pre_hook(lambda module, args: calls.append(len(args) + 10)))
    batch = collate(backbone, [s for s in scenes if s[1] is None][:2])
    assert set(batch.vision) == {"pixel_values", "high_res_pixel_values"}
    backbone.forward(batch).loss.backward()
    for handle in handles:
        handle.remove()
    assert sorted(calls) == [0, 1, 2, 12]
    assert backbone.connector.high_res_vision_proj.weight.grad is not None


def test_freezing_the_vision_freezes_sam_its_necks_and_alpha(hybrid_dir):
    backbone = load_backbone(str(hybrid_dir))
    backbone.freeze_vision()
    model = backbone.model.model
    for part in (model.high_res_vision_model, model.high_res_vision_neck, model.high_res_vision_proj, model.vision_model):
        assert not any(p.requires_grad for p in part.parameters())
    assert not model.high_res_vision_alpha.requires_grad
    assert all(p.requires_grad for p in backbone.connector.parameters())


# -- bad inputs ------------------------------------------------------------------------------------


def test_swapped_branch_facts_are_refused_by_width(hybrid_dir, tmp_path):
    sam_width = 4 * hybrid.SAM_CHANNELS
    swapped = with_profile(hybrid_dir, tmp_path, hidden_size_vit=sam_width, hidden_size_high_res=planted.VIT_HIDDEN)
    with pytest.raises(SinkTrainError, match=f"vision width of {sam_width}.*other vision branch.*swapped"):
        load_backbone(str(hybrid_dir), sink_profile=swapped)


def test_a_hybrid_profile_on_a_model_without_sam_is_refused(hybrid_dir, plain_dir, tmp_path):
    hybrid_profile = str(hybrid_dir / "sink_profile.json")
    with pytest.raises(SinkTrainError, match="high-resolution SAM branch.*only DeepSeek-VL-Hybrid has"):
        load_backbone(str(plain_dir), sink_profile=hybrid_profile)
    with pytest.raises(SinkTrainError, match="high-resolution SAM branch"):
        load_backbone(str(ensure_demo_model("llava_onevision")), sink_profile=hybrid_profile)


def test_a_profile_read_before_the_norm_is_refused(plain_dir, tmp_path):
    with pytest.raises(SinkTrainError, match="after post_layernorm.*set vit_layer to -1"):
        load_backbone(str(plain_dir), sink_profile=with_profile(plain_dir, tmp_path, vit_layer=-2))


def test_a_branch_without_its_facts_is_refused(hybrid_dir, tmp_path):
    with pytest.raises(SinkTrainError, match="sink_branch 'high_res'.*needs tau_high_res and high_res_dims"):
        with_profile(hybrid_dir, tmp_path, sink_branch="high_res", tau_high_res=None)
    with pytest.raises(SinkTrainError, match="sink_branch 'sam' is unknown"):
        with_profile(hybrid_dir, tmp_path, sink_branch="sam")


def test_a_processor_expanding_another_token_count_is_refused(plain_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(plain_dir, copy)
    settings = json.loads((copy / "processor_config.json").read_text())
    settings["num_image_tokens"] = 576
    (copy / "processor_config.json").write_text(json.dumps(settings))
    with pytest.raises(SinkTrainError, match="expands each image into 576 tokens.*gives 64"):
        load_backbone(str(copy))


def deepseek_vl_7b_config():
    """deepseek-vl-7b-chat's shapes (config only: never instantiated): SigLIP-L/16 at 384 px, SAM-B
    at 1024 px (256 output channels, so 1024 at the aligner), a 30-layer LLaMA of width 4096."""
    vision = SiglipVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24, patch_size=16, image_size=384)
    sam = SamVisionConfig(hidden_size=768, output_channels=256, num_hidden_layers=12, image_size=1024, patch_size=16, global_attn_indexes=[2, 5, 8, 11])
    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_hidden_layers=30)
    return DeepseekVLHybridConfig(vision_config=vision, high_res_vision_config=sam, text_config=text)


def test_the_real_7b_needs_find_sink_dims_and_takes_its_profile(tmp_path):
    config = deepseek_vl_7b_config()
    with pytest.raises(SinkTrainError, match="no built-in sink profile for vision tower 'siglip_vision_model-h1024-p16-384'.*find_sink_dims"):
        resolve_profile(str(tmp_path), config, None)
    found = SinkProfile(
        name="deepseek-vl-7b", vision_tower="siglip_vision_model-h1024-p16-384", vit_dims=[10], vit_layer=-1, criterion="dim_threshold",
        tau_v=30.0, hidden_size_vit=1024, hidden_size_llm=4096, high_res_dims=[7], tau_high_res=20.0, hidden_size_high_res=1024,
        sink_branch="either",
    )
    save_profile(found, tmp_path / "profile.json")
    assert resolve_profile(str(tmp_path), config, str(tmp_path / "profile.json")) == found
