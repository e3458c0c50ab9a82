"""Qwen2-VL / Qwen2.5-VL specifics on the tiny demos (the shared contract is in test_contract.py).

Dynamic resolution: slots per image follow the image's size within --min_pixels/--max_pixels;
the V-sink rule reads the ViT width (``embed_dim`` in Qwen2-VL, whose ``vision_config.hidden_size``
is the LLM's); freezing the vision tower leaves the merger (the connector) trainable; the
processor loads without torchvision, and when it cannot load at all the error says why.
"""

import dataclasses
import json
import shutil

import pytest
import torch
from PIL import Image

from sinktrain.backbones.profiles import save_profile
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo import ensure_demo_model
from sinktrain.demo import qwen2_vl as planted
from sinktrain.errors import SinkTrainError

NAMES = ["qwen2_vl", "qwen2_5_vl"]


@pytest.fixture(scope="module", params=NAMES)
def model_dir(request):
    return ensure_demo_model(request.param)


@pytest.fixture(scope="module")
def backbone(model_dir):
    return load_backbone(str(model_dir))


@pytest.mark.parametrize("size, slots", [((96, 96), 36), ((160, 64), 40), ((40, 40), 16), ((600, 600), 256)])
def test_slots_follow_the_image_size_within_the_pixel_range(backbone, size, slots):
    """64 x 64 to 256 x 256 pixels (the demo processor's range): one slot per 16 x 16 pixels;
    a smaller or larger image is resized into range, its aspect kept."""
    vision, counted = backbone.image_inputs([Image.new("RGB", size, (10, 200, 30))])
    assert counted == [slots]
    assert int(vision["image_grid_thw"].prod()) == 4 * slots  # 2 x 2 patches per slot
    assert vision["pixel_values"].shape[0] == 4 * slots


def test_pixel_limits_as_qwens_processor_takes_them(model_dir):
    backbone = load_backbone(str(model_dir))
    backbone.set_pixel_limits(min_pixels=None, max_pixels=80 * 80)
    assert backbone.image_inputs([Image.new("RGB", (96, 96))])[1] == [25]  # resized to 80 x 80: 5 x 5 slots
    with pytest.raises(SinkTrainError, match="--min_pixels 9000 exceeds --max_pixels 6400"):
        backbone.set_pixel_limits(min_pixels=9000, max_pixels=None)
    with pytest.raises(SinkTrainError, match="--max_pixels 0: pass a positive number"):
        backbone.set_pixel_limits(None, 0)


def test_fixed_size_family_refuses_pixel_limits():
    llava = load_backbone(str(ensure_demo_model("llava")))
    with pytest.raises(SinkTrainError, match="dynamic-resolution families.*leave them out"):
        llava.set_pixel_limits(None, 256 * 256)


def test_vision_width_is_the_vits_not_the_llms(backbone):
    config = backbone.model.config
    assert backbone.vision_width == planted.VIT_HIDDEN != config.text_config.hidden_size
    if config.model_type == "qwen2_vl":
        assert config.vision_config.hidden_size == config.text_config.hidden_size  # the trap


def test_profile_with_dims_beyond_the_vit_width_is_refused(model_dir, tmp_path):
    profile = planted.demo_profile(windowed="2_5" in model_dir.name)
    wide = dataclasses.replace(profile, vit_dims=[planted.VIT_HIDDEN + 3], hidden_size_vit=None)
    save_profile(wide, tmp_path / "wide.json")
    with pytest.raises(SinkTrainError, match=r"dims \[67\] exceed the model's hidden size"):
        load_backbone(str(model_dir), sink_profile=str(tmp_path / "wide.json"))


def test_profile_read_before_the_last_block_is_refused(model_dir, tmp_path):
    profile = dataclasses.replace(planted.demo_profile(windowed=False), vit_layer=-2)
    save_profile(profile, tmp_path / "early.json")
    with pytest.raises(SinkTrainError, match="merger reads the last block's output"):
        load_backbone(str(model_dir), sink_profile=str(tmp_path / "early.json"))


def test_freezing_the_vision_tower_keeps_the_merger_trainable(model_dir):
    backbone = load_backbone(str(model_dir))
    backbone.freeze_vision()
    merger = {id(p) for p in backbone.connector.parameters()}
    for name, p in backbone.vision_tower.named_parameters():
        assert p.requires_grad == (id(p) in merger), name
    assert merger and all(p.requires_grad for p in backbone.connector.parameters())


def test_processor_loads_without_torchvision_and_fails_clearly(model_dir, tmp_path):
    """A real Qwen repo names Qwen2VLProcessor, which transformers cannot build without torchvision
    (its video processor needs it): the tokenizer and PIL image processor are loaded instead."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    backbone = load_backbone(str(copy))
    assert type(backbone.processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert backbone.processor.chat_template and backbone.tokenizer.convert_tokens_to_ids("<|image_pad|>") == backbone.image_token_id
    (copy / "preprocessor_config.json").unlink()
    with pytest.raises(SinkTrainError, match="cannot load the processor.*preprocessor_config.json"):
        load_backbone(str(copy))


def test_qwen25_slots_are_unpermuted_from_window_order(model_dir):
    """Qwen2.5's merger sees patches in window order; a sink planted in one corner's window must
    land in that corner's slot of the row-major grid (the model un-permutes its output the same way)."""
    backbone = load_backbone(str(model_dir))
    image = Image.new("RGB", (128, 96), (128, 128, 128))  # 8 x 6 slots: several 2 x 2 windows
    image.paste(Image.new("RGB", (16, 16), (200, 0, 200)), (112, 80))  # the last slot
    vision, slots = backbone.image_inputs([image])
    ids = torch.tensor([[backbone.image_token_id] * slots[0]])
    with torch.no_grad():
        backbone.model(**backbone.model_inputs(ids, torch.ones_like(ids), vision))
    assert backbone.slots.state.v_sinks[0].nonzero().flatten().tolist() == [slots[0] - 1]


def test_an_image_the_processor_refuses_is_a_counted_bad_sample(backbone):
    """Qwen's processor refuses aspect ratios over 200: the sample is skipped (and counted), not a crash."""
    import io

    from sinktrain.data.stream import BadSample

    buffer = io.BytesIO()
    Image.new("RGB", (900, 4)).save(buffer, format="PNG")
    record = {"conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a line"}]}
    raw = {"__key__": "thin", "json": json.dumps(record).encode(), "png": buffer.getvalue()}
    with pytest.raises(BadSample, match="image not processable.*aspect ratio"):
        backbone.encoder()(raw)
