"""Every family's projector-pretraining format (LLaVA's ``plain`` and its equivalents): the image
(in its wrapper where the family needs one), then the caption and "\\n" as the only target; the
question is dropped; bos only where the family's tokenizer has one."""

import pytest
from PIL import Image

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.chat.engine import IGNORE_INDEX
from sinktrain.errors import SinkTrainError

CAPTION = "Two small red circles on a white background."
EXPECTED = {  # family: (template, text before the image tokens, text right after them)
    "llava": ("plain", "<s>", ""),
    "qwen2_vl": ("qwen2_vl_plain", "<|vision_start|>", "<|vision_end|>"),
    "llava_onevision": ("onevision_plain", "", ""),
    "deepseek_vl": ("deepseek_plain", "<s>", ""),  # the demo tokenizer's bos
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_caption_after_the_image_is_the_only_target(name):
    backbone = load_backbone(str(demo.ensure_demo_model(name)))
    template, before, after = EXPECTED[name]
    assert backbone.pretraining_template() == template
    conversation = [{"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": CAPTION}]
    example = backbone.encoder(template).encode(conversation, [Image.new("RGB", (96, 96), (255, 255, 255))])
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    image = [i for i, token in enumerate(ids) if token == backbone.image_token_id]
    tokenizer = backbone.tokenizer
    assert image == list(range(image[0], image[-1] + 1))
    assert tokenizer.decode(ids[: image[0]]) == before
    targets = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(ids[image[-1] + 1 : targets[0]]) == after
    assert targets == list(range(targets[0], len(ids))) and tokenizer.decode(ids[targets[0]:]) == CAPTION + "\n"
    with pytest.raises(SinkTrainError, match="needs an image"):
        backbone.encoder(template).encode([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}], [])
