"""DIYSink stage 1 for real (recipes/diysink_pretrain.py on the tiny LLaVA and the demo caption
shards, one rank, its default ZeRO-2 config): ``--connector both`` learns exactly what two runs
``--connector sink`` and ``--connector non`` learn, each projector bitwise; a run that trains one
projector leaves the other as it started; the recipe's own checks refuse what would couple the
two projectors and data without images. 2-rank ZeRO-3 runs on Qwen2.5-VL (feeding stage 2)
and DeepSeek-VL-Hybrid: tests/test_recipes_families.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.shards import write_shards
from sinktrain.diysink.pretrain import check_has_images, check_independent
from sinktrain.errors import SinkTrainError

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["--max_steps", "4", "--per_device_batch_size", "4", "--num_workers", "1", "--save_every", "4", "--shuffle_buffer", "16"]


def pretrain(output_dir: Path, *flags: str) -> subprocess.Popen:
    """A stage-1 run on one torch thread (the three runs compared bitwise must share their arithmetic)."""
    command = [sys.executable, str(ROOT / "recipes" / "diysink_pretrain.py"), *STEPS, "--output_dir", str(output_dir), *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three runs side by side (each is mostly start-up on one thread)."""
    root = tmp_path_factory.mktemp("pretrain")
    demo.ensure_demo_model(), demo.demo_caption_pattern()  # built here once, not by three runs at a time
    started = {connector: pretrain(root / connector, "--connector", connector) for connector in ("both", "sink", "non")}
    for connector, process in started.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
    return {connector: load_file(str(root / connector / "connector.safetensors")) for connector in started}


def projector(state: dict, part: str) -> dict:
    return {name.split(".", 1)[1]: value for name, value in state.items() if name.startswith(f"f_{part}.")}


def test_both_at_once_equals_two_separate_runs(runs):
    stock = {name: value for name, value in load_backbone(str(demo.ensure_demo_model())).connector.state_dict().items()}
    for part in ("sink", "non"):
        together, alone = projector(runs["both"], part), projector(runs[part], part)
        assert any(not torch.equal(together[name], stock[name]) for name in stock), f"f_{part} did not train"
        for name, value in together.items():
            assert torch.equal(value, alone[name]), (part, name)
    for trained, frozen in (("sink", "non"), ("non", "sink")):  # the other projector stays the stock one
        for name, value in projector(runs[trained], frozen).items():
            assert torch.equal(value, stock[name]), (trained, name)


def test_what_would_couple_the_projectors_is_refused():
    check_independent(("sink",), 1.0, "fp16")  # one projector: nothing to couple
    with pytest.raises(SinkTrainError, match=r"--connector both with --max_grad_norm 1.0.*pass --max_grad_norm 0"):
        check_independent(("sink", "non"), 1.0, "fp32")
    with pytest.raises(SinkTrainError, match=r"one loss scale .*use --precision bf16"):
        check_independent(("sink", "non"), 0.0, "fp16")


def test_data_without_images_is_refused(tmp_path):
    records = [({"id": f"t{i}", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, None, None) for i in range(4)]
    shards = write_shards(iter(records), str(tmp_path / "text-%06d.tar"), 4)
    with pytest.raises(SinkTrainError, match=r"holds no image in its first 4 members: stage-1 pretraining trains the connector on images"):
        check_has_images(shards)
    check_has_images([demo.demo_caption_pattern().replace("{000000..000003}", "000000")])
