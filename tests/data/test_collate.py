"""The collator: padding, images and positions on hand-made samples; then its blank image on the
real tiny demo LLaVA and Qwen2-VL (nothing mocked).

A micro-batch in which no sample has an image gets the family's blank image, its slots appended
to row 0 as padding (attention 0, labels -100), so the vision tower and connector run on every
step; the real tokens' logits and the loss are those without it, and the connector's gradient is
zero. A micro-batch with an image gets no blank.

    python -m pytest tests/data/test_collate.py -q
"""

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from sinktrain.backbones.registry import load_backbone
from sinktrain.data import scenes
from sinktrain.data.collate import Collator
from sinktrain.data.scenes import Scene, draw_scene
from sinktrain.demo import ensure_demo_model

M = -100  # IGNORE_INDEX, written out so a change there fails these tests
PAD_OK = dict(atol=1e-5, rtol=1e-4)  # float32: only the padding length (kernel shapes) differs


# --- the collator on hand-made samples ----------------------------------------------------------

IMG = 50  # the image token id of the collator tests below
BLANK = ({"pixel_values": torch.full((1, 3, 4, 4), 7.0)}, [3])  # a blank image that takes 3 slots


def toy(ids, labels, images, lane, index, bad):
    vision = {"pixel_values": torch.arange(images * 48.0).view(images, 3, 4, 4)} if images else {}
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "vision": vision, "images": images,
            "lane": lane, "index": index, "bad": bad}


def test_collator_pads_right_concatenates_images_and_keeps_positions():
    samples = [toy([1, IMG, IMG, 6, 7], [M, M, M, 6, 7], 2, 0, 3, 0), toy([1, 8], [M, 8], 0, 2, 11, 4),
               toy([1, IMG, 9], [M, M, 9], 1, 2, 12, 4)]
    batch, positions = Collator(pad_token_id=99, image_token_id=IMG, blank=BLANK)(samples)
    assert batch.input_ids.tolist() == [[1, IMG, IMG, 6, 7], [1, 8, 99, 99, 99], [1, IMG, 9, 99, 99]]
    assert batch.labels.tolist() == [[M, M, M, 6, 7], [M, 8, M, M, M], [M, M, 9, M, M]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]
    assert batch.images_per_sample.tolist() == [2, 0, 1]
    assert batch.has_image.tolist() == [True, False, True] and batch.has_image.dtype == torch.bool
    assert set(batch.vision) == {"pixel_values"}  # images in row order, and no blank among them
    expected = torch.cat([samples[0]["vision"]["pixel_values"], samples[2]["vision"]["pixel_values"]])
    assert torch.equal(batch.vision["pixel_values"], expected)
    assert positions == [(0, 3, 0, 0, 1), (2, 11, 4, 0, 1), (2, 12, 4, 0, 1)]  # (lane, index, bad, part, parts)


def test_collator_gives_a_batch_without_images_the_blank_as_masked_padding_of_row_0():
    samples = [toy([1, 5], [M, 5], 0, 1, 0, 0), toy([1, 8, 9, 4], [M, M, 9, 4], 0, 1, 1, 2)]
    collate = Collator(pad_token_id=99, image_token_id=IMG, blank=BLANK)
    batch, positions = collate(samples)
    assert batch.input_ids.tolist() == [[1, 5, IMG, IMG, IMG], [1, 8, 9, 4, 99]]
    assert batch.labels.tolist() == [[M, 5, M, M, M], [M, M, 9, 4, M]]
    assert batch.attention_mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
    assert batch.images_per_sample.tolist() == [0, 0] and not batch.has_image.any()  # the blank is no sample's
    assert set(batch.vision) == {"pixel_values"} and torch.equal(batch.vision["pixel_values"], BLANK[0]["pixel_values"])
    assert positions == [(1, 0, 0, 0, 1), (1, 1, 2, 0, 1)]
    assert samples[0]["input_ids"].tolist() == [1, 5]  # the samples themselves are left as they were
    again, _ = collate(samples)  # and the next blank batch is the same
    assert torch.equal(again.input_ids, batch.input_ids) and torch.equal(again.vision["pixel_values"], BLANK[0]["pixel_values"])


# --- the blank image on the real demo models ----------------------------------------------------


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def backbone(request, one_thread):
    return load_backbone(str(ensure_demo_model(request.param)))


def text_sample(backbone, question, answer, index):
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    sample = backbone.encoder().encode(turns, [])
    assert sample is not None and sample["vision"] == {} and sample["images"] == 0
    return dict(sample, lane=0, index=index, bad=0)


def image_sample(backbone, scene, category, index):
    turns = [{"from": "human", "value": "<image>\n" + scenes.QUESTIONS[category][0]},
             {"from": "gpt", "value": scenes.answer(scene, category)}]
    sample = backbone.encoder().encode(turns, [draw_scene(scene)])
    assert sample is not None and sample["images"] == 1
    return dict(sample, lane=0, index=index, bad=0)


def texts(backbone):
    """A short and a long text-only sample, so the blank makes row 0 longer than row 1 or not."""
    short = text_sample(backbone, scenes.SUM_QUESTION.format(a=2, b=3), "5", 0)
    long = text_sample(backbone, scenes.MIX_QUESTION.format(a="red", b="blue") + " " + scenes.QUESTIONS["caption"][0],
                       scenes.caption(Scene("circle", "red", "large", 3, "grey")), 1)
    return short, long


def expected_slots(backbone, vision) -> int:
    """The blank's slots, worked out from the config and processor, not from the backbone."""
    config = backbone.model.config
    if config.model_type == "llava":
        assert vision["pixel_values"].shape[0] == 1
        size = backbone.processor.image_processor.crop_size
        assert vision["pixel_values"].shape[1:] == (3, size["height"], size["width"])
        grid = size["height"] // config.vision_config.patch_size
        return grid * grid  # CLS dropped
    grid = vision["image_grid_thw"]
    assert grid.shape == (1, 3) and vision["pixel_values"].shape[0] == int(grid.prod())
    return int(grid.prod()) // config.vision_config.spatial_merge_size ** 2


def logits_and_loss(backbone, ids, mask, labels, vision):
    with torch.no_grad():
        out = backbone.model(**backbone.model_inputs(ids, mask, vision), labels=labels)
    return out.logits, out.loss


@pytest.mark.parametrize("short_first", [True, False])
def test_batch_without_images_gets_the_blank_as_masked_padding_of_row_0(backbone, short_first):
    samples = list(texts(backbone) if short_first else texts(backbone)[::-1])
    image_id, pad = backbone.image_token_id, backbone.tokenizer.pad_token_id
    blank_vision, blank_slots = backbone.image_inputs.blank()
    slots = expected_slots(backbone, blank_vision)
    assert blank_slots == [slots] and slots > 0

    batch, _ = backbone.collator()(samples)

    n0, n1 = (len(s["input_ids"]) for s in samples)
    assert batch.input_ids.shape == (2, max(n0 + slots, n1))
    assert batch.input_ids[0, :n0].tolist() == samples[0]["input_ids"].tolist()
    assert batch.input_ids[0, n0 : n0 + slots].eq(image_id).all()
    assert batch.attention_mask[0].tolist() == [1] * n0 + [0] * (batch.input_ids.shape[1] - n0)
    assert batch.labels[0, :n0].tolist() == samples[0]["labels"].tolist() and batch.labels[0, n0:].eq(M).all()
    assert batch.input_ids[0, n0 + slots :].eq(pad).all() and batch.input_ids[1, n1:].eq(pad).all()
    assert int(batch.input_ids.eq(image_id).sum()) == slots  # no image token anywhere else
    assert batch.images_per_sample.tolist() == [0, 0] and not batch.has_image.any()
    assert batch.vision.keys() == blank_vision.keys()
    assert all(torch.equal(batch.vision[k], blank_vision[k]) for k in blank_vision)
    assert backbone.slots_per_image(batch.vision, slots) == [slots]

    # The same rows padded without the blank: the real tokens' logits and the loss do not change.
    ids = [s["input_ids"] for s in samples]
    plain_ids = pad_sequence(ids, batch_first=True, padding_value=pad)
    plain_mask = pad_sequence([torch.ones_like(i) for i in ids], batch_first=True)
    plain_labels = pad_sequence([s["labels"] for s in samples], batch_first=True, padding_value=M)
    plain, plain_loss = logits_and_loss(backbone, plain_ids, plain_mask, plain_labels, {})

    ran = []
    hook = backbone.vision_tower.register_forward_hook(lambda *_: ran.append(True))
    try:
        blanked, blank_loss = logits_and_loss(backbone, batch.input_ids, batch.attention_mask, batch.labels, batch.vision)
    finally:
        hook.remove()
    assert ran, "the vision tower did not run on the blank image"
    for row, n in enumerate((n0, n1)):
        torch.testing.assert_close(blanked[row, :n], plain[row, :n], **PAD_OK)
        alone, _ = logits_and_loss(backbone, ids[row][None], torch.ones(1, n, dtype=torch.long), None, {})
        torch.testing.assert_close(blanked[row, :n], alone[0], **PAD_OK)  # as if the sample were alone
    torch.testing.assert_close(blank_loss, plain_loss, **PAD_OK)


def test_the_blank_gives_the_connector_a_zero_gradient(backbone):
    batch, _ = backbone.collator()(list(texts(backbone)))
    backbone.model.zero_grad(set_to_none=True)
    try:
        loss = backbone.forward(batch).loss
        loss.backward()
        connector = dict(backbone.connector.named_parameters())
        assert connector and all(p.grad is not None for p in connector.values()), "the connector is not in the graph"
        for name, parameter in connector.items():
            assert parameter.grad.eq(0).all(), f"{name}: the blank changed the gradient"
        assert any(p.grad is not None and p.grad.ne(0).any() for p in backbone.language_model.parameters())
    finally:
        backbone.model.zero_grad(set_to_none=True)


def test_batch_with_an_image_gets_no_blank(backbone):
    image_id = backbone.image_token_id
    scene = Scene("square", "blue", "large", 2, "white", mark_corner=3)
    pictured = image_sample(backbone, scene, "count", 0)
    short, long = texts(backbone)
    samples = [short, pictured, long]  # row 0 has no image, but the batch does

    batch, positions = backbone.collator()(samples)

    lengths = [len(s["input_ids"]) for s in samples]
    assert batch.input_ids.shape == (3, max(lengths))
    assert batch.attention_mask.sum(1).tolist() == lengths
    for row, sample in enumerate(samples):
        assert batch.input_ids[row, : lengths[row]].tolist() == sample["input_ids"].tolist()
    slots = int(pictured["input_ids"].eq(image_id).sum())
    assert slots > 0 and int(batch.input_ids.eq(image_id).sum()) == slots  # the image's own slots only
    assert batch.images_per_sample.tolist() == [0, 1, 0] and batch.has_image.tolist() == [False, True, False]
    assert batch.vision.keys() == pictured["vision"].keys()
    assert all(torch.equal(batch.vision[k], pictured["vision"][k]) for k in batch.vision)
    assert backbone.slots_per_image(batch.vision, slots) == [slots]
    assert positions == [(0, 0, 0, 0, 1), (0, 0, 0, 0, 1), (0, 1, 0, 0, 1)]

    logits, _ = logits_and_loss(backbone, batch.input_ids, batch.attention_mask, batch.labels, batch.vision)
    n = lengths[1]
    alone, _ = logits_and_loss(backbone, pictured["input_ids"][None], torch.ones(1, n, dtype=torch.long), None,
                               pictured["vision"])
    torch.testing.assert_close(logits[1, :n], alone[0], **PAD_OK)  # the image sample as if alone
