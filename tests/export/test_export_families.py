"""Every family's export loads without sinktrain and computes what the training-time model computes.

For each family's tiny demo model, in process: DIYSink (a DualMLP whose sink projector differs
from the stock one, sinks first) and LSG (gates on two layers, away from neutral) are attached the
way the recipes attach them, and on LLaVA DIYSink with ReW (weights set from the question) and
DIYSink on a left-padded batch of two; the model's weights go through the exporter's writers
(sinktrain.export: the remote-code model, the LSG adapter); then ONE fresh process in which
``import sinktrain`` fails (tests/export/load_export.py) loads every export with plain
transformers (``trust_remote_code=True``, ``device_map="auto"``; the adapter through its own loader onto the
stock model; without ``trust_remote_code`` transformers' error says to pass it)
and runs a forward and a greedy generate() on inputs built with the stock processor. Logits must
equal the training-time model's (fp32, tight) and the tokens must be the same. The DeepSpeed side
(consolidating a 2-rank ZeRO-3 checkpoint, the tool end to end): tests/export/test_convert_tool.py.
"""

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.scenes import demo_samples
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.rew import ReWeighting
from sinktrain.diysink.sentence import SentenceEncoder
from sinktrain.export.convert import write_adapter, write_base_files
from sinktrain.export.remote_model import export_settings, save_model
from sinktrain.lsg.gating import LayerGating
from sinktrain.train.run_record import model_record

from families import FAMILIES, perturb
from fresh_load import assert_same, load_exports, reference

GATED_LAYERS = [1, 2]
QUESTION = "What colour is the largest object?"
CASES = [(method, name) for method in ("diysink", "lsg") for name in FAMILIES] + [("rew", "llava"), ("batch", "llava")]


def attach(method: str, backbone) -> None:
    if method in ("diysink", "rew", "batch"):
        perturb(attach_dual_mlp(backbone).f_sink, scale=0.3, seed=1)
    if method == "rew":  # weights away from (1, 1), set from the question
        rew = ReWeighting(backbone, SentenceEncoder(str(demo.ensure_demo_sentence_encoder())))
        perturb(rew.module, scale=0.5, seed=3)
        rew.set_questions([QUESTION])
    if method == "lsg":
        perturb(LayerGating(backbone, GATED_LAYERS).gates, scale=2.0, seed=2)


def export(method: str, name: str, directory: Path, image) -> tuple[dict, dict]:
    """Attach ``method`` to the family's demo model, export it into ``directory``; (inputs, reference)."""
    path = str(demo.ensure_demo_model(name))
    backbone = load_backbone(path)
    attach(method, backbone)
    record = model_record(path, path, backbone)
    settings = export_settings(record)
    if method != "lsg":
        save_model(backbone.model.state_dict(), backbone.model.config, settings, directory, torch.float32, "200KB")
        write_base_files(directory, record)
    else:
        write_adapter(directory, backbone.model.state_dict(), record, settings)
    inputs = FAMILIES[name].stock_inputs(backbone, QUESTION, [image]) if method != "batch" else llava_batch(backbone, image)
    expected = reference(backbone.model, inputs)
    return inputs, {**expected, "v_sinks": int(backbone.slots.state.v_sinks.sum())}


def llava_batch(backbone, image) -> dict:
    """DIYSink on a batch: two prompts of different lengths, left-padded as for generation."""
    from sinktrain.data.chat.formats import VICUNA_V1_SYSTEM

    processor = backbone.processor
    processor.tokenizer.padding_side = "left"
    texts = [f"{VICUNA_V1_SYSTEM} USER: <image>\n{question} ASSISTANT:" for question in (QUESTION, "How many objects are there, and which is red?")]
    return dict(processor(text=texts, images=[image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """{(method, family): (reference, what the export computed in the fresh process)}."""
    root = tmp_path_factory.mktemp("exports")
    image = Image.open(io.BytesIO(next(png for _, png in demo_samples(20, seed=3) if png))).convert("RGB")
    jobs, references = [], {}
    for method, name in CASES:
        directory = root / f"{method}-{name}"
        inputs, references[method, name] = export(method, name, directory, image)
        torch.save(inputs, directory.with_suffix(".inputs.pt"))
        job = {"kind": "adapter", "dir": str(directory), "inputs": str(directory.with_suffix(".inputs.pt"))}
        if method != "lsg":  # the whole model, as transformers' remote code
            job |= {"kind": "remote", "device_map": "auto", "questions": [QUESTION] if method == "rew" else None}
        jobs.append(job)
    jobs.append({"kind": "untrusted", "dir": str(root / "diysink-llava")})
    *results, untrusted = load_exports(jobs, root)
    return {key: (references[key], result) for key, result in zip(references, results)} | {"untrusted": untrusted}


@pytest.mark.parametrize("method, name", CASES)
def test_export_reproduces_the_training_model(loaded, method, name):
    reference, exported = loaded[method, name]
    assert reference["v_sinks"] > 0, "the input should hold V-sinks, or the method changes nothing"
    assert_same(exported, reference)
    assert exported["class"].startswith("SinkTrain") == (method != "lsg")


def test_without_trust_remote_code_the_error_says_what_to_do(loaded):
    assert "trust_remote_code=True" in loaded["untrusted"]["error"]
