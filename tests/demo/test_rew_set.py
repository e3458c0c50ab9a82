"""The ReW demo set (sinktrain.demo.rew_set) on the trained demo Qwen2.5-VL (the set the ReW
recipe test trains on, built once per session): what ReW's demo learns from.

Every record's answer is the model's own greedy answer from the claimed visual tokens (global
questions: the V-sinks alone; local ones: the other tokens alone), so the direction ReW should
take is built in; the kinds alternate in every shard and keep their original task.
"""

import io
import json

import webdataset as wds
from PIL import Image

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.stream import expand_shards
from sinktrain.demo.rew_set import BATCH, GLOBAL, KINDS, LOCAL, PER_KIND, answers_from
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.eval.generate import generate_batch
from sinktrain.data.eval_set import EvalSample

CHECKED = BATCH  # the first batch of each kind, padded as the build padded it


def records() -> list[tuple[dict, bytes]]:
    shards = expand_shards(demo.rew_data("demo:qwen2_5_vl"))
    return [(json.loads(s["json"]), s["png"]) for s in wds.WebDataset(shards, shardshuffle=False)]


def test_answers_come_from_the_claimed_tokens_and_differ_from_the_full_input(one_thread):
    written = records()
    assert len(written) == 2 * PER_KIND
    assert [r["category"] for r, _ in written[:4]] == ["global", "local", "global", "local"]
    assert {r["task"] for r, _ in written if r["category"] == "global"} <= set(GLOBAL)
    assert {r["task"] for r, _ in written if r["category"] == "local"} <= set(LOCAL)
    backbone = load_backbone(str(demo.ensure_demo_trained_model("qwen2_5_vl")))
    attach_dual_mlp(backbone)
    backbone.model.eval()
    differ = 0
    for kind, (part, _) in KINDS.items():
        chosen = [(r, png) for r, png in written if r["category"] == kind][:CHECKED]
        assert answers_from(backbone, chosen, part) == [r["conversations"][1]["value"] for r, _ in chosen]
        full = generate_batch(backbone, [
            EvalSample(r["id"], kind, r["conversations"][:1], "", (Image.open(io.BytesIO(png)).convert("RGB"),)) for r, png in chosen
        ], backbone.check_template(None), 16)
        differ += sum(a.strip() != r["conversations"][1]["value"] for a, (r, _) in zip(full, chosen))
    assert differ >= CHECKED // 2  # the selection changes answers: there is something for ReW to learn
