"""LLaVA-OneVision specifics on the tiny demo (the shared contract is in test_contract.py).

A grid larger than ``anyres_max_N`` crops' worth of tokens is shrunk by the model's packing
(bilinear): the slots still match the stock processor and the planted sinks land where the
model's own packing puts them. An image's slot count follows its AnyRes crops (the demo: 32 px
crops of 16 tokens, grids up to 2x2), so an image can be too large for --max_length: the sample
is dropped and counted, never cut through the image. Samples whose images and <image> markers
disagree are skipped and counted with the reason. A profile read at another vision layer, a
config that reads several layers or drops SigLIP's first token, and a processor cropping for
another model are refused with the fix.
"""

import io
import json
import logging
import shutil
from itertools import islice

import pytest
import torch
from PIL import Image

from sinktrain.backbones.profiles import save_profile
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.shards import write_shards
from sinktrain.data.stream import ShardStream
from sinktrain.data.eval_set import read_eval_set
from sinktrain.data.scenes import demo_samples
from sinktrain.demo import ensure_demo_model
from sinktrain.errors import SinkTrainError
from sinktrain.eval import evaluate

from families_onevision import onevision_planted_slots, onevision_stock_inputs, stock_slot_counts
from stream_helpers import Keyed, chat, png

# Slots per image on the demo, from the stock processor arithmetic (test_contract.py checks it):
# 32x32 = base 16 + 1 tile 4x4 with 4 newlines; 96x96 = base 16 + 2x2 tiles (8x8) with 8
# newlines; each image of a multi-image sample is one crop plus one newline.
SMALL, LARGE, PER_IMAGE_OF_SEVERAL = 36, 88, 17


@pytest.fixture(scope="module")
def model_dir():
    return ensure_demo_model("llava_onevision")


@pytest.fixture(scope="module")
def backbone(model_dir):
    return load_backbone(str(model_dir))


def test_slot_counts_follow_the_crops(backbone):
    counts = [backbone.image_inputs([Image.new("RGB", size)])[1] for size in [(32, 32), (96, 96)]]
    assert counts == [[SMALL], [LARGE]]
    vision, slots = backbone.image_inputs([Image.new("RGB", (96, 96)), Image.new("RGB", (32, 32))])
    assert slots == [PER_IMAGE_OF_SEVERAL] * 2 and vision["pixel_values"].shape[0] == 2  # one crop each


def test_a_shrunk_grid_keeps_slot_counts_and_planted_sinks(model_dir, tmp_path):
    """anyres_max_1: a 2x2-tile grid (64 tokens) exceeds one crop's 16 by more than 1.1^2, so the
    packing shrinks it to 4x4. A slot blended from several crop tokens is a V-sink when any is."""
    backbone = load_backbone(str(copy_with_config(model_dir, tmp_path, vision_aspect_ratio="anyres_max_1")))
    images = [Image.open(io.BytesIO(data)) for _, data in demo_samples(12, seed=3) if data][:4]
    found_any = False
    for image in images:
        inputs = onevision_stock_inputs(backbone, "What is it?", [image])
        with torch.no_grad():
            backbone.model(**inputs)
        state = backbone.slots.state
        assert int(state.visual.sum()) == stock_slot_counts(backbone, inputs["image_sizes"], 1)[0] == 16 + 4 * 5
        assert int((state.visual & ~state.patch).sum()) == 4  # one newline per shrunk row
        found = set(state.v_sinks[0][state.visual[0]].nonzero().flatten().tolist())
        must, may = onevision_planted_slots(backbone, image)
        assert must <= found <= may, (found, must)
        found_any |= bool(found)
    assert found_any


def stream_one_pass(shard: str, backbone, max_length: int, samples: int) -> list[dict]:
    encoder = Keyed(backbone.encoder(max_length=max_length))
    stream = ShardStream([shard], encoder, rank=0, world_size=1, num_workers=0, shuffle_buffer=1)
    return list(islice(iter(stream), samples))


def test_an_image_over_max_length_is_dropped_and_counted_and_mismatches_skipped(backbone, tmp_path, sinktrain_warnings):
    small, large = png((32, 32)), png((96, 96), (30, 30, 200))
    two = "<image>\n<image>\nWhich is red?"
    shard = write_shards([
        ({"id": "large", "conversations": chat("<image>\nWhat is it?", "A blue square.")}, large, "png"),
        ({"id": "small", "conversations": chat("<image>\nWhat is it?", "A red square.")}, small, "png"),
        ({"id": "pair", "conversations": chat(two, "The first.")}, [small, large], ["png", "png"]),
        ({"id": "markers2images1", "conversations": chat(two, "The first.")}, small, "png"),
        ({"id": "markers1images2", "conversations": chat("<image>\nWhich?", "The first.")}, [small, large], ["png", "png"]),
        ({"id": "text", "conversations": chat("Hi?", "Hello.")}, None, None),
    ], str(tmp_path / "%06d.tar"), 10)[0]
    full = {s["key"]: len(s["input_ids"]) for s in stream_one_pass(shard, backbone, 4096, 4)}
    assert full.keys() == {"large", "small", "pair", "text"}
    assert full["large"] - full["small"] == LARGE - SMALL
    max_length = full["small"] + 10  # room for the small image, not for the large one's 52 more slots
    assert full["large"] > max_length

    kept = stream_one_pass(shard, backbone, max_length, 3)
    assert [s["key"] for s in kept] == ["small", "pair", "text"]  # the large image is dropped whole...
    assert [s["bad"] for s in kept] == [1, 1, 3]  # ...and counted, as the mismatches are
    messages = [r.getMessage() for r in sinktrain_warnings.records if r.levelno == logging.WARNING]
    reasons = {
        "large": f"longer than --max_length {max_length} and not truncatable",
        "markers2images1": "2 <image> marker(s) but the sample has 1 image(s)",
        "markers1images2": "1 <image> marker(s) but the sample has 2 image(s)",
    }
    for key, reason in reasons.items():
        assert any(f"bad sample {key} " in m and reason in m for m in messages), (key, messages)


def eval_record(key: str, question: str, answer: str = "red") -> dict:
    return {"id": key, "category": "colour", "conversations": chat(question, answer)}


def test_eval_sets_with_multi_image_samples(backbone, tmp_path):
    """Evaluation reads every image of a sample in <image> order and batches them like training;
    batching does not change the answers. Markers and images that disagree are an error."""
    red, blue = png((96, 96)), png((40, 96), (30, 30, 200))
    shard = write_shards([
        (eval_record("pair", "<image>\n<image>\nWhich is red?"), [red, blue], ["png", "png"]),
        (eval_record("one", "What colour is it?"), red, "png"),  # an unmarked single image goes first
        (eval_record("three", "<image>\n<image>\n<image>\nHow many?"), [blue, red, blue], ["png"] * 3),
        (eval_record("text", "Hi?"), None, None),
    ], str(tmp_path / "eval-%06d.tar"), 10)[0]
    samples = read_eval_set(shard)
    assert [len(s.images) for s in samples] == [2, 1, 3, 0]
    assert [s.images[i].size for s in samples[:1] for i in range(2)] == [(96, 96), (40, 96)]
    assert samples[1].question[0]["value"] == "<image>\nWhat colour is it?"
    together, alone = evaluate(backbone, samples, batch_size=4), evaluate(backbone, samples, batch_size=1)
    assert [p.prediction for p in together.predictions] == [p.prediction for p in alone.predictions]
    bad = write_shards([(eval_record("bad", "<image>\nWhich?"), [red, blue], ["png", "png"])], str(tmp_path / "bad-%06d.tar"), 10)[0]
    with pytest.raises(SinkTrainError, match="'bad'.*has 1 <image> marker.*2 image"):
        read_eval_set(bad)


def test_profile_read_at_another_vision_layer_is_refused(model_dir, backbone, tmp_path):
    profile = tmp_path / "profile.json"
    save_profile(backbone.sink_profile.__class__(**{**vars(backbone.sink_profile), "vit_layer": -2}), profile)
    with pytest.raises(SinkTrainError, match="reads V-sinks at vision layer -2.*feeds its projector from layer -1"):
        load_backbone(str(model_dir), sink_profile=str(profile))


def copy_with_config(model_dir, tmp_path, **changes):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **changes}))
    return copy


@pytest.mark.parametrize("changes", [{"vision_feature_layer": [-2, -1]}, {"vision_feature_select_strategy": "default"}])
def test_several_feature_layers_or_a_dropped_first_token_are_refused(model_dir, tmp_path, changes):
    with pytest.raises(SinkTrainError, match="supports one layer with 'full'"):
        load_backbone(str(copy_with_config(model_dir, tmp_path, **changes)))


def test_a_processor_cropping_for_another_model_is_refused(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    settings = json.loads((copy / "preprocessor_config.json").read_text())
    settings["image_grid_pinpoints"] = [[32, 32], [32, 64], [64, 32]]
    (copy / "preprocessor_config.json").write_text(json.dumps(settings))
    with pytest.raises(SinkTrainError, match="load the processor saved with this model"):
        load_backbone(str(copy))
