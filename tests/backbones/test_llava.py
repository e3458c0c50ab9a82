"""LLaVA-1.5 specifics on the tiny demo LLaVA (the shared contract is in test_contract.py).

The demo ViT has a planted V-sink circuit (sinktrain.demo.llava.plant_v_sinks): one MLP neuron of
layer SINK_LAYER writes SINK_GAIN * gelu(pre-activation) into channel SINK_DIM at 1-4 corner
patches. Checked here: those are massive activations in Sun et al.'s sense and the profile's rule
finds exactly them; images are padded to a square with the mean colour (LLaVA-1.5's stage 2),
not cropped; the DualMLP's two connectors start from the stock one, both get gradients and the
ViT none, even with no sink in the batch; --connector_init files are checked and loaded; a profile
read at another vision layer is refused.
"""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from families import llava_planted_slots, perturb, with_images
from sinktrain.backbones.llava import expand_to_square
from sinktrain.backbones.registry import load_backbone
from sinktrain.demo import ensure_demo_model
from sinktrain.demo import llava as planted
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.modeling.connector import DualMLPConnector
from sinktrain.errors import SinkTrainError

@pytest.fixture(scope="module")
def demo_model_dir():
    return ensure_demo_model("llava")


@pytest.fixture(scope="module")
def stock(demo_model_dir):
    return load_backbone(str(demo_model_dir))


@pytest.fixture
def backbone(demo_model_dir):
    return load_backbone(str(demo_model_dir))


@pytest.fixture(scope="module")
def images(scenes):
    return [image for _, image in with_images(scenes, 40)]


def connector_input(backbone, images) -> torch.Tensor:
    captured = {}
    hook = backbone.connector.register_forward_pre_hook(lambda m, args: captured.__setitem__("x", args[0].detach()))
    with torch.no_grad():
        backbone.model.model.get_image_features(backbone.image_inputs(images)[0]["pixel_values"])
    hook.remove()
    return captured["x"]


# -- the planted V-sinks are massive activations, found by the profile's rule ----------------


def test_sinks_are_massive_and_found_by_the_profile_rule(stock, images):
    features = connector_input(stock, images)
    mask = stock.token_sink_mask(features).view(len(images), -1)
    sinks = []
    for i, image in enumerate(images):
        fired, _ = llava_planted_slots(stock, image)
        assert set(mask[i].nonzero().flatten().tolist()) == fired, i
        massive = features[i][mask[i]][:, planted.SINK_DIM].abs()
        assert massive.min() > 100 * features[i].abs().median()  # massive: scale-aware, as find_sink_dims' rule
        sinks += massive.tolist()
    # Sun et al.'s absolute "> 100" (7B scale) holds for typical sinks; a corner partly covered by
    # an object sits between tau (60) and 100.
    assert torch.tensor(sinks).median() > 100
    counts = mask.sum(dim=1)
    assert counts.min() >= 1 and counts.max() <= 4 and len(set(counts.tolist())) > 1
    assert set(mask.nonzero()[:, 1].tolist()) <= set(planted.CANDIDATE_PATCHES)


# -- image tokens and preprocessing ------------------------------------------------------------


def test_blank_image_is_mean_colour(stock):
    vision, slots = stock.image_inputs.blank()
    pixels = vision["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64) and slots == [64]
    # The processor's mean colour normalises to ~0 (rounding to 8-bit leaves < 1/255 / std).
    assert pixels.abs().max() < 0.02
    black = stock.image_inputs([Image.new("RGB", (64, 64))])[0]["pixel_values"]
    assert black.abs().min() > 1.0  # the check above would notice a black canvas


def test_non_square_images_are_padded_not_cropped(stock):
    red = Image.new("RGB", (96, 48), (255, 0, 0))  # wide: padding goes above and below
    padded = expand_to_square(red, stock.image_inputs.background)
    assert padded.size == (96, 96)
    assert padded.getpixel((0, 0)) == stock.image_inputs.background
    assert padded.getpixel((0, 24)) == (255, 0, 0) and padded.getpixel((95, 71)) == (255, 0, 0)
    assert padded.getpixel((0, 72)) == stock.image_inputs.background
    pixels = stock.image_inputs([red])[0]["pixel_values"]
    expected = stock.processor.image_processor([padded], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, expected)
    # 96x96 -> 64x64: rows 0-15 and 48-63 are padding (mean colour ~0), rows 16-47 red.
    assert pixels[0, :, :14].abs().max() < 0.05 and pixels[0, :, 50:].abs().max() < 0.05
    red_rows = pixels[0, :, 18:46]
    assert red_rows[0].min() > 1.5 and red_rows[1].max() < -1.0  # R high, G low (CLIP-normalised)
    # A centre crop (the stock processor without padding) would have no padding rows at all.
    cropped = stock.processor.image_processor([red], return_tensors="pt")["pixel_values"]
    assert not torch.allclose(cropped, pixels, atol=0.1)


# -- DualMLP: sink-first order, weights --------------------------------------------------------


# -- attaching and --connector_init ------------------------------------------------------------


def test_connector_init_missing_file(backbone, tmp_path):
    with pytest.raises(SinkTrainError, match=r"--connector_init .*nope.safetensors does not exist.*f_sink"):
        attach_dual_mlp(backbone, connector_init=str(tmp_path / "nope.safetensors"))


def test_connector_init_wrong_keys(backbone, tmp_path):
    path = tmp_path / "stock_projector.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.connector.state_dict().items()}, str(path))
    with pytest.raises(SinkTrainError, match=r"holds no f_sink.\* weights \(it has \['linear_1.bias'.*diysink_pretrain.py writes one"):
        attach_dual_mlp(backbone, connector_init=str(path))


def test_connector_init_wrong_shapes(backbone, demo_model_dir, tmp_path):
    donor = attach_dual_mlp(load_backbone(str(demo_model_dir)))
    state = {k: v.contiguous() for k, v in donor.state_dict().items()}
    state["f_sink.linear_1.bias"] = state["f_sink.linear_1.bias"][:1].clone()  # would broadcast
    path = tmp_path / "bad_shapes.safetensors"
    save_file(state, str(path))
    with pytest.raises(SinkTrainError, match=r"f_sink.linear_1.bias.*\[1\].*\[128\]"):
        attach_dual_mlp(backbone, connector_init=str(path))


def test_connector_init_loads_a_saved_connector(backbone, demo_model_dir, tmp_path):
    donor = attach_dual_mlp(load_backbone(str(demo_model_dir)))
    perturb(donor.f_sink, seed=1)
    perturb(donor.f_non, seed=2)
    path = tmp_path / "stage1.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    connector = attach_dual_mlp(backbone, connector_init=str(path))
    assert isinstance(backbone.connector, DualMLPConnector)
    loaded = dict(connector.named_parameters())
    for name, value in donor.state_dict().items():
        assert torch.equal(loaded[name], value), name


def test_profile_read_at_another_vision_layer_is_refused(demo_model_dir, tmp_path):
    wrong_layer = tmp_path / "profile.json"
    data = json.loads((demo_model_dir / "sink_profile.json").read_text())
    wrong_layer.write_text(json.dumps({**data, "vit_layer": -1}))
    with pytest.raises(SinkTrainError, match="feeds its projector from layer -2"):
        load_backbone(str(demo_model_dir), sink_profile=str(wrong_layer))


def test_a_processor_expanding_images_into_another_count_is_refused(stock):
    """Slots per image come from the config; a processor that expands <image> differently (here: it
    counts no CLS token to drop) would misplace every slot, so the backbone refuses it."""
    from copy import deepcopy

    from sinktrain.backbones.llava import LlavaBackbone

    processor = deepcopy(stock.processor)
    processor.num_additional_image_tokens = 0
    with pytest.raises(SinkTrainError, match="expands each image into .* tokens, but this model's projector gives"):
        LlavaBackbone(stock.model, processor, stock.sink_profile)
