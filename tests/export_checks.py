"""Does a run's export compute what the run's model computes? The 2-rank recipe tests ask it of
their runs (tests/test_recipes_families.py, tests/export/test_convert_tool.py).

    check_export(run_dir, work_dir, step)     # convert (the tool's exporter), load fresh, compare

The training-time model is the run's checkpoint loaded into sinktrain's backbone (the DIYSink
checkpoint, or the gates on the stock model); the export is loaded in a process that cannot import
sinktrain (fresh_load.py); both get the same stock-processor inputs on a demo image.
"""

import io
from pathlib import Path

import torch
from PIL import Image

from sinktrain.backbones.registry import load_backbone
from sinktrain.data.scenes import demo_samples
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.checkpoint import consolidated_state, load_diysink_checkpoint
from sinktrain.diysink.rew import ReWeighting
from sinktrain.diysink.sentence import SentenceEncoder
from sinktrain.export.convert import ExportOptions, export_run
from sinktrain.lsg.gate_file import gating_from_checkpoint
from sinktrain.train.run_record import read_run_record

from families import FAMILIES
from fresh_load import assert_same, load_exports, reference

QUESTION = "What colour is the largest object?"


def demo_image() -> Image.Image:
    return Image.open(io.BytesIO(next(png for _, png in demo_samples(20, seed=3) if png))).convert("RGB")


def trained_backbone(run_dir: Path, step: int, gates: Path | None = None):
    """The run's model at ``step`` in sinktrain (LSG: the gates of ``gates``, default that checkpoint's;
    ReW: weights set for QUESTION)."""
    record = read_run_record(run_dir)
    method, backbone = record["method"], load_backbone(record["model_path"])
    checkpoint = Path(run_dir) / "checkpoints" / f"step_{step:06d}"
    if method["method"] == "lsg":
        gating_from_checkpoint(backbone, gates or checkpoint / "gates")
    elif "rew" in method:
        attach_dual_mlp(backbone, sink_first=method["sink_first"])
        rew = ReWeighting(backbone, SentenceEncoder(method["rew"]["sentence_encoder"]), method["rew"]["hidden"])
        backbone.model.load_state_dict(consolidated_state(checkpoint), strict=True)
        rew.set_questions([QUESTION])
    else:
        load_diysink_checkpoint(backbone, checkpoint, sink_first=method["sink_first"])
    return backbone


def expected_outputs(backbone, inputs_file: Path) -> dict:
    inputs = FAMILIES[backbone.model.config.model_type].stock_inputs(backbone, QUESTION, [demo_image()])
    torch.save(inputs, inputs_file)
    return reference(backbone.model, inputs)


def check_export(run_dir: Path, tmp_path: Path, step: int) -> Path:
    """Export ``step`` of the run in process, load it fresh, compare; returns the export directory."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = export_run(Path(run_dir), tmp_path / "hf", ExportOptions(step=step))
    adapter = read_run_record(run_dir)["method"]["method"] == "lsg"
    expected = expected_outputs(trained_backbone(run_dir, step), tmp_path / "inputs.pt")
    job = {"kind": "adapter" if adapter else "remote", "dir": str(out), "inputs": str(tmp_path / "inputs.pt"), "questions": [QUESTION]}
    (exported,) = load_exports([job], tmp_path)
    assert_same(exported, expected)
    return out
