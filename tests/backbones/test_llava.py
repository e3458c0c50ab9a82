"""The LLaVA backbone and the DualMLP connector on the tiny demo LLaVA (real weights, no mocks).

The demo ViT has a planted V-sink circuit (sinktrain.demo.plant_v_sinks): one MLP neuron of layer
SINK_LAYER writes SINK_GAIN * gelu(pre-activation) into channel SINK_DIM. The ground truth for
"which patches are V-sinks" is read from that neuron directly, independently of sinktrain.sinks.
Run:
    python -m pytest tests/backbones/test_llava.py -q
"""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from sinktrain.demo import llava as demo
from sinktrain.backbones.llava import expand_to_square
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.collate import Collator
from sinktrain.data.encode import SampleEncoder
from sinktrain.data.scenes import demo_samples
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.connector import DualMLPConnector
from sinktrain.errors import SinkTrainError
from sinktrain.sinks import v_sink_mask

ATOL = 1e-5  # fp32 on CPU: the neutral paths agree to rounding
# Connector outputs of sink tokens are large (~100s); batched vs per-image matmuls differ by rounding.
EMBED_TOL = dict(atol=1e-5, rtol=1e-3)


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples():
    """200 demo samples as (record, PIL image or None)."""
    return [
        (record, Image.open(io.BytesIO(png)).convert("RGB") if png is not None else None)
        for record, png in demo_samples(200, seed=1)
    ]


@pytest.fixture(scope="module")
def images(samples):
    return [image for _, image in samples if image is not None]


@pytest.fixture(scope="module")
def stock(demo_model_dir):
    """An untouched backbone: never attach anything to this one."""
    return load_backbone(str(demo_model_dir))


@pytest.fixture
def backbone(demo_model_dir):
    """A fresh backbone each test may modify."""
    return load_backbone(str(demo_model_dir))


def encode(backbone, record, image):
    encoder = SampleEncoder(
        backbone.tokenizer, backbone.preprocess_images, "v1", backbone.image_token_id, backbone.num_image_tokens, None,
    )
    example = encoder.encode(record["conversations"], image)
    return {**example, "reader": 0, "index": 0, "bad": 0}  # stream bookkeeping, unused here


def collate(backbone, chosen):
    batch, _ = Collator(backbone.tokenizer.pad_token_id)([encode(backbone, *s) for s in chosen])
    return batch


def image_samples(samples, n):
    return [s for s in samples if s[1] is not None][:n]


def text_sample(samples):
    return next(s for s in samples if s[1] is None)


def planted_sinks(backbone, pixel_values):
    """(B, N) ground truth from the planted neuron, plus the vision features (B, N, D)."""
    captured = {}
    fc1 = backbone.model.model.vision_tower.encoder.layers[demo.SINK_LAYER].mlp.fc1

    def record(module, inputs, output):  # returns None: the output itself is left alone
        captured["pre"] = output[..., demo.SINK_NEURON].detach()

    hook = fc1.register_forward_hook(record)
    try:
        with torch.no_grad():
            features = backbone.vision_features(pixel_values)
    finally:
        hook.remove()
    written = F.gelu(captured["pre"][:, 1:]) * demo.SINK_GAIN  # position 0 is CLS
    return written > demo.TAU_V, features


def profile_mask(backbone, features):
    p = backbone.sink_profile
    return v_sink_mask(features, p.criterion, p.tau_v, p.vit_dims)


def capture_llm_inputs(backbone):
    """Record the inputs_embeds the LLM decoder receives; returns (store, hook handle)."""
    store = []

    def record(module, args, kwargs):
        store.append(kwargs["inputs_embeds"].detach())

    handle = backbone.model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    return store, handle


def sink_first_expected(connector, features, mask, weights=None):
    """Per image: [w_sink * f_sink(sinks) ; w_non * f_non(non-sinks)], each in original order."""
    rows = []
    for i in range(features.shape[0]):
        sink = connector.f_sink(features[i][mask[i]])
        non = connector.f_non(features[i][~mask[i]])
        if weights is not None:
            sink, non = sink * weights[i, 0], non * weights[i, 1]
        rows.append(torch.cat([sink, non]))
    return torch.stack(rows)


def perturb(module, scale=0.2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


# -- sink detection on the planted circuit -----------------------------------------------------


def test_sink_detection_recovers_planted_sinks(stock, images):
    pixel_values = stock.preprocess_images(images)
    planted, features = planted_sinks(stock, pixel_values)
    mask = profile_mask(stock, features)
    assert mask.shape == (len(images), 64)
    for i in range(len(images)):
        assert torch.equal(mask[i], planted[i]), f"image {i}: found {mask[i].nonzero().flatten().tolist()}, planted {planted[i].nonzero().flatten().tolist()}"
    counts = mask.sum(dim=1)
    assert counts.min() >= 1 and counts.max() <= 4
    assert len(set(counts.tolist())) > 1, "every image has the same number of sinks"
    positions = set(mask.nonzero()[:, 1].tolist())
    assert positions <= set(demo.CANDIDATE_PATCHES)
    # Massive activations (Sun et al.): > 100 and far above the typical magnitude.
    for i in range(len(images)):
        massive = features[i][mask[i]][:, demo.SINK_DIM].abs()
        median = features[i].abs().median()
        assert massive.min() > 100
        assert massive.min() > 100 * median


def test_connector_uses_the_same_sink_mask(backbone, images):
    connector = attach_dual_mlp(backbone)
    pixel_values = backbone.preprocess_images(images[:20])
    planted, features = planted_sinks(backbone, pixel_values)
    assert torch.equal(connector.sink_mask(features), planted)


# -- image tokens and preprocessing ------------------------------------------------------------


def test_num_image_tokens_matches_processor_and_vision_features(stock, images):
    config = stock.model.config.vision_config
    assert stock.num_image_tokens == 64 == (config.image_size // config.patch_size) ** 2
    encoded = stock.processor(
        text=f"USER: {stock.processor.image_token}\nWhat is this? ASSISTANT:", images=images[0], return_tensors="pt"
    )
    assert int((encoded["input_ids"] == stock.image_token_id).sum()) == 64
    with torch.no_grad():
        assert stock.vision_features(stock.preprocess_images(images[:2])).shape == (2, 64, 64)


def test_text_only_gets_a_mean_colour_image(stock):
    pixels = stock.preprocess_images([None])
    assert pixels.shape == (1, 3, 64, 64)
    # The processor's mean colour normalises to ~0 (rounding to 8-bit leaves < 1/255 / std).
    assert pixels.abs().max() < 0.02
    black = stock.preprocess_images([Image.new("RGB", (64, 64))])
    assert black.abs().min() > 1.0  # the check above would notice a black canvas


def test_non_square_images_are_padded_not_cropped(stock):
    red = Image.new("RGB", (96, 48), (255, 0, 0))  # wide: padding goes above and below
    padded = expand_to_square(red, stock.preprocess_images.background)
    assert padded.size == (96, 96)
    assert padded.getpixel((0, 0)) == stock.preprocess_images.background
    assert padded.getpixel((0, 24)) == (255, 0, 0) and padded.getpixel((95, 71)) == (255, 0, 0)
    assert padded.getpixel((0, 72)) == stock.preprocess_images.background
    pixels = stock.preprocess_images([red])
    expected = stock.processor.image_processor([padded], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, expected)
    # 96x96 -> 64x64: rows 0-15 and 48-63 are padding (mean colour ~0), rows 16-47 red.
    assert pixels[0, :, :14].abs().max() < 0.05 and pixels[0, :, 50:].abs().max() < 0.05
    red_rows = pixels[0, :, 18:46]
    assert red_rows[0].min() > 1.5 and red_rows[1].max() < -1.0  # R high, G low (CLIP-normalised)
    # A centre crop (the stock processor without padding) would have no padding rows at all.
    cropped = stock.processor.image_processor([red], return_tensors="pt")["pixel_values"]
    assert not torch.allclose(cropped, pixels, atol=0.1)


# -- neutral equivalence -----------------------------------------------------------------------


def test_dual_mlp_at_neutral_equals_stock_logits(stock, backbone, samples):
    batch = collate(stock, image_samples(samples, 3))
    assert batch.attention_mask.min() == 0, "want a padded batch"
    attach_dual_mlp(backbone, sink_first=False)
    with torch.no_grad():
        reference = stock.model(
            input_ids=batch.input_ids, pixel_values=batch.pixel_values, attention_mask=batch.attention_mask
        ).logits
        via_backbone = backbone.forward(batch).logits
        stock_way = backbone.model(
            input_ids=batch.input_ids, pixel_values=batch.pixel_values, attention_mask=batch.attention_mask
        ).logits
        plain_backbone = stock.forward(batch).logits
    torch.testing.assert_close(plain_backbone, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(via_backbone, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(stock_way, reference, atol=ATOL, rtol=0)


def test_reordering_changes_logits(stock, backbone, samples):
    """The neutral comparison above is sensitive: sink-first order alone moves the logits."""
    batch = collate(stock, image_samples(samples, 3))
    attach_dual_mlp(backbone, sink_first=True)
    with torch.no_grad():
        reference = stock.forward(batch).logits
        reordered = backbone.forward(batch).logits
    assert (reordered - reference).abs().max() > 100 * ATOL


@pytest.mark.parametrize("dual_mlp", [False, True])
def test_text_only_sample_in_a_mixed_batch(stock, backbone, samples, dual_mlp):
    chosen = [image_samples(samples, 2)[0], text_sample(samples), image_samples(samples, 2)[1]]
    batch = collate(stock, chosen)
    assert batch.has_image.tolist() == [True, False, True]
    if dual_mlp:
        attach_dual_mlp(backbone, sink_first=False)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    with torch.no_grad():
        logits = backbone.forward(batch).logits
        for row in range(3):
            ids = batch.input_ids[row : row + 1, : lengths[row]]
            if batch.has_image[row]:
                alone = stock.model(input_ids=ids, pixel_values=batch.pixel_values[row : row + 1]).logits
            else:
                assert (ids != stock.image_token_id).all()
                alone = stock.model(input_ids=ids).logits
            torch.testing.assert_close(logits[row : row + 1, : lengths[row]], alone, atol=ATOL, rtol=0)


# -- DualMLP: sink-first order, weights --------------------------------------------------------


def test_attach_starts_both_projectors_from_the_stock_one(stock, backbone):
    projector = backbone.connector
    connector = attach_dual_mlp(backbone)
    assert backbone.connector is connector and backbone.model.model.multi_modal_projector is connector
    assert connector.f_non is projector
    assert connector.f_sink is not projector
    for (name, p_sink), (_, p_stock) in zip(connector.f_sink.named_parameters(), stock.connector.named_parameters()):
        assert torch.equal(p_sink, p_stock), name
    perturb(connector.f_sink)
    for p_non, p_stock in zip(connector.f_non.parameters(), stock.connector.parameters()):
        assert torch.equal(p_non, p_stock)  # f_sink owns its own storage


def test_sink_first_image_embeddings(backbone, samples):
    chosen = image_samples(samples, 4)
    batch = collate(backbone, chosen)
    connector = attach_dual_mlp(backbone, sink_first=True)
    perturb(connector.f_sink)
    with torch.no_grad():
        features = backbone.vision_features(batch.pixel_values)
        mask = profile_mask(backbone, features)
        assert (mask.sum(dim=1) >= 1).all()
        # The perturbation matters: on sink tokens the two projectors now disagree.
        assert (connector.f_sink(features[mask]) - connector.f_non(features[mask])).abs().max() > 0.01
        expected = sink_first_expected(connector, features, mask)
        torch.testing.assert_close(backbone.image_embeddings(batch.pixel_values), expected, **EMBED_TOL)

        slots = batch.input_ids == backbone.image_token_id
        store, handle = capture_llm_inputs(backbone)
        try:
            backbone.forward(batch)
            backbone.model(input_ids=batch.input_ids, pixel_values=batch.pixel_values, attention_mask=batch.attention_mask)
        finally:
            handle.remove()
    assert len(store) == 2
    for embeds in store:  # our forward and HF's own path both see the sink-first sequence
        seen = embeds[slots].reshape(len(chosen), backbone.num_image_tokens, -1)
        torch.testing.assert_close(seen, expected, **EMBED_TOL)


def test_sink_first_off_keeps_positions(backbone, images):
    connector = attach_dual_mlp(backbone, sink_first=False)
    perturb(connector.f_sink)
    with torch.no_grad():
        features = backbone.vision_features(backbone.preprocess_images(images[:4]))
        mask = profile_mask(backbone, features)
        out = connector(features)
        torch.testing.assert_close(out[mask], connector.f_sink(features[mask]), **EMBED_TOL)
        torch.testing.assert_close(out[~mask], connector.f_non(features[~mask]), **EMBED_TOL)


def test_weights_scale_the_groups(backbone, images):
    connector = attach_dual_mlp(backbone, sink_first=True)
    perturb(connector.f_sink)
    weights = torch.tensor([[2.0, 0.5], [0.0, 3.0], [1.0, 1.0]])
    with torch.no_grad():
        features = backbone.vision_features(backbone.preprocess_images(images[:3]))
        mask = profile_mask(backbone, features)
        expected = sink_first_expected(connector, features, mask, weights)
        torch.testing.assert_close(connector(features, weights), expected, **EMBED_TOL)
        unweighted = connector(features)
    # Image 1 has w_sink 0: its leading (sink) rows vanish, the rest triple.
    n_sink = int(mask[1].sum())
    assert connector(features, weights)[1, :n_sink].abs().max() == 0
    torch.testing.assert_close(connector(features, weights)[1, n_sink:], 3 * unweighted[1, n_sink:], **EMBED_TOL)


# -- gradients and freezing --------------------------------------------------------------------


def test_gradients_reach_both_projectors_and_not_the_vit(backbone, samples):
    backbone.freeze_vision()
    connector = attach_dual_mlp(backbone)
    batch = collate(backbone, image_samples(samples, 2))
    backbone.forward(batch).loss.backward()
    for name, p in connector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in backbone.vision_tower.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    assert backbone.model.lm_head.weight.grad is not None


def test_f_sink_gets_a_gradient_without_sinks(backbone, samples):
    """ZeRO-3 safety: an empty sink set still runs f_sink and gives it a (zero) gradient."""
    backbone.freeze_vision()
    connector = attach_dual_mlp(backbone)
    connector.tau = 1e9
    batch = collate(backbone, image_samples(samples, 2))
    with torch.no_grad():
        assert not connector.sink_mask(backbone.vision_features(batch.pixel_values)).any()
    backbone.forward(batch).loss.backward()
    for name, p in connector.f_sink.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() == 0, name
    for name, p in connector.f_non.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_text_only_batch_still_touches_the_connector(backbone, samples):
    """ZeRO-3 safety: a batch of text-only samples runs the vision path with zero weight."""
    backbone.freeze_vision()
    connector = attach_dual_mlp(backbone)
    batch = collate(backbone, [text_sample(samples)] * 2)
    assert not batch.has_image.any()
    loss = backbone.forward(batch).loss
    loss.backward()
    for name, p in connector.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() == 0, name
    with torch.no_grad():
        ids = batch.input_ids[:1, : int(batch.attention_mask[0].sum())]
        labels = batch.labels[:1, : ids.shape[1]]
        torch.testing.assert_close(loss, backbone.model(input_ids=ids, labels=labels).loss, atol=ATOL, rtol=0)


# -- attaching and --connector_init ------------------------------------------------------------


def test_attach_twice_raises(backbone):
    attach_dual_mlp(backbone)
    with pytest.raises(SinkTrainError, match="already has a DualMLP connector"):
        attach_dual_mlp(backbone)


def test_connector_init_missing_file(backbone, tmp_path):
    with pytest.raises(SinkTrainError, match=r"--connector_init .*nope.safetensors does not exist.*f_sink"):
        attach_dual_mlp(backbone, connector_init=str(tmp_path / "nope.safetensors"))


def test_connector_init_wrong_keys(backbone, tmp_path):
    path = tmp_path / "stock_projector.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.connector.state_dict().items()}, str(path))
    with pytest.raises(SinkTrainError, match=r"holds keys \['linear_1.bias'.*expected \['f_non.linear_1.bias'"):
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
