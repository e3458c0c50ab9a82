"""LSG on multi-turn samples: training and generation gate each answer from the same prompt.

With one example per turn (the LSG recipe's --multi_turn split), answer t's training example is
the conversation up to it, only answer t supervised: its tokens up to the gate's read position are
exactly the generation prompt for that history, and the gates compute the same r in the training
forward and at generation's prefill. Trained whole (--multi_turn joint), the gate would read the end
of the first question for every answer: a different r from the one generation uses for turn 2.
"""

import io
import json

import pytest
import torch

from sinktrain.backbones.registry import load_backbone
from sinktrain.data.chat import IGNORE_INDEX, encode_prompt
from sinktrain.data.eval_set import EvalSample
from sinktrain.demo import ensure_demo_model
from sinktrain.eval.generate import prompt_inputs
from sinktrain.lsg.scoped import scoped_gating
from stream_helpers import png

LAYER = 1
CONVERSATION = [
    {"from": "human", "value": "<image>\nWhat colour is the shape?"}, {"from": "gpt", "value": "Red."},
    {"from": "human", "value": "How many shapes are there?"}, {"from": "gpt", "value": "Two large circles."},
    {"from": "human", "value": "Is the background dark?"}, {"from": "gpt", "value": "No, it is white."},
]


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def backbone(request):
    backbone = load_backbone(str(ensure_demo_model(request.param)))
    backbone.model.eval()
    return backbone


def raw_sample() -> dict:
    return {"__key__": "talk", "json": json.dumps({"id": "talk", "conversations": CONVERSATION}).encode(), "png": png()}


def encoded(backbone, per_turn: bool):
    encoder = backbone.encoder(None, 2048)
    encoder.one_example_per_turn = per_turn
    return encoder(raw_sample())


def generation_prompt(backbone, end: int) -> list[int]:
    """The ids generate() sees when asked turn ``end // 2 + 1``'s question after the turns before it."""
    from PIL import Image

    _, slots = backbone.image_inputs([Image.open(io.BytesIO(png())).convert("RGB")])
    return encode_prompt(CONVERSATION[:end], backbone.tokenizer, backbone.check_template(None), backbone.image_token_id, slots)


def test_each_answer_is_an_example_whose_prompt_is_the_generation_prompt(backbone):
    examples = encoded(backbone, per_turn=True)
    assert len(examples) == 3
    for turn, example in enumerate(examples):
        prompt = generation_prompt(backbone, 2 * turn + 1)
        targets = (example["labels"] != IGNORE_INDEX).nonzero().flatten()
        assert example["input_ids"][: len(prompt)].tolist() == prompt
        assert int(targets[0]) == len(prompt)  # the gate reads position len(prompt) - 1: the prompt's last token
        answer = backbone.tokenizer.decode(example["labels"][targets], skip_special_tokens=True)
        assert CONVERSATION[2 * turn + 1]["value"] in answer  # only this turn's answer is supervised
        assert all(CONVERSATION[2 * other + 1]["value"] not in answer for other in range(turn))
        assert example["question"] == CONVERSATION[2 * turn]["value"].replace("<image>\n", "")
    whole = encoded(backbone, per_turn=False)
    assert isinstance(whole, dict) and torch.equal(whole["input_ids"], examples[-1]["input_ids"])


def gate_ratio_training(backbone, gating, example) -> torch.Tensor:
    batch, _ = backbone.collator()([dict(example, lane=0, index=0, bad=0)])
    with torch.no_grad():
        backbone.model(**backbone.model_inputs(batch.input_ids, batch.attention_mask, batch.vision), labels=batch.labels)
    return gating.last_ratios[LAYER][0]


def gate_ratio_generation(backbone, gating, end: int) -> torch.Tensor:
    from PIL import Image

    image = Image.open(io.BytesIO(png())).convert("RGB")
    sample = EvalSample("talk", "talk", CONVERSATION[:end], "", (image,))
    with torch.no_grad():
        backbone.model(**prompt_inputs(backbone, [sample], backbone.check_template(None)))
    return gating.last_ratios[LAYER][0]


def test_gates_read_the_same_state_in_training_and_generation_turn_by_turn(backbone):
    torch.manual_seed(0)
    with scoped_gating(backbone, [LAYER]) as gating:
        with torch.no_grad():  # input-dependent gates: r differs with the question read
            torch.nn.init.normal_(gating.gates[str(LAYER)].out.weight, std=0.5)
        per_turn = encoded(backbone, per_turn=True)
        at_generation = [gate_ratio_generation(backbone, gating, 2 * turn + 1) for turn in range(3)]
        for example, expected in zip(per_turn, at_generation):
            torch.testing.assert_close(gate_ratio_training(backbone, gating, example), expected, rtol=1e-5, atol=1e-6)
        assert (at_generation[1] - at_generation[0]).abs().max() > 1e-3  # the questions do gate differently
        joint = gate_ratio_training(backbone, gating, encoded(backbone, per_turn=False))
        torch.testing.assert_close(joint, at_generation[0], rtol=1e-5, atol=1e-6)  # whole: the first question's r
