"""What a run was trained from and with, written to ``{output_dir}/run_config.json`` when training
starts (and again on resume): everything tools/convert_to_hf.py needs offline besides the weights.

    {"format": 1, "recipe": "diysink-finetune", "model": "<the --model flag>", "model_path": "<resolved>",
     "model_revision": "<hub commit or null>", "model_type": "llava", "sink_profile": {...},
     "method": {"method": "diysink", "sink_first": true[, "rew": {...}]} | {"method": "lsg", "layers": [10], ...},
     "template": "v1", "min_pixels": null, "max_pixels": null, "training": {...}}

The method is read off the backbone as the recipe built it (the DualMLP connector and the order
of its slots, or the gating), so what is recorded is what trained.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sinktrain.backbones.base import Backbone
from sinktrain.errors import SinkTrainError
from sinktrain.modeling.connector import DualMLPConnector
from sinktrain.modeling.slots import sink_first_order
from sinktrain.train.checkpoint import write_atomically
from sinktrain.train.ds_config import zero_stage

RECORD_FILE = "run_config.json"
FORMAT = 1  # bump when a reader could misread an older record


def method_of(backbone: Backbone) -> dict:
    gating = getattr(backbone, "gating", None)
    if gating is not None:
        return {"method": "lsg", "layers": gating.layers, "groups": gating.groups, "scale_layout_slots": gating.scale_layout_slots}
    if not isinstance(backbone.connector, DualMLPConnector):
        return {"method": None}
    method = {"method": "diysink", "sink_first": sink_first_order in backbone.slots.orderers}
    rew = getattr(backbone, "rew", None)
    if rew is not None:  # DIYSink's ReW: the MLP is in the checkpoint, the encoder is named here
        method["rew"] = {"sentence_encoder": rew.encoder.name, "embedding_width": rew.encoder.width, "hidden": rew.module.mlp[0].out_features}
    return method


def model_record(model: str, model_path: str, backbone: Backbone, template: str | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None) -> dict:
    """The model side: what the run started from (``model``: as the user named it) and what it attached."""
    return {
        "format": FORMAT,
        "model": model,
        "model_path": model_path,
        "model_revision": getattr(backbone.model.config, "_commit_hash", None),
        "model_type": backbone.model.config.model_type,
        "sink_profile": json.loads(backbone.sink_profile.to_json()),
        "method": method_of(backbone),
        "template": backbone.check_template(template),
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
    }


def run_record(run, backbone: Backbone) -> dict:
    args, settings = run.args, run.settings
    return {
        **model_record(args.model or run.model, run.model, backbone, args.template, args.min_pixels, args.max_pixels),
        "recipe": run.recipe,
        "training": {
            **dataclasses.asdict(settings), "world_size": run.world_size, "zero_stage": zero_stage(run.ds_config),
            "global_batch_size": settings.global_batch(run.world_size),
            "data": args.data or "the demo shards", "ds_config": args.ds_config, "seed": args.seed,
        },
    }


def write_run_record(run, backbone: Backbone) -> None:
    if run.is_main:
        write_atomically(run.output_dir / RECORD_FILE, json.dumps(run_record(run, backbone), indent=2) + "\n")


def read_run_record(run_dir: Path) -> dict:
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        raise SinkTrainError(
            f"{run_dir} has no {RECORD_FILE}: it is not a sinktrain run directory, or was trained by a sinktrain "
            "older than the converter; pass the --output_dir of a recipes/*.py run"
        )
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise SinkTrainError(
            f"{path} is run-record format {record.get('format')!r}; this sinktrain reads format {FORMAT}: "
            "convert it with the sinktrain version that trained it (or upgrade sinktrain)"
        )
    return record
