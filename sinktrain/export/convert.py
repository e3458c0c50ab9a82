"""A run's checkpoint -> a Hugging Face model directory (tools/convert_to_hf.py, and --export_model
at the end of training: one exporter).

    export_run(Path("runs/NAME"), Path("hf/NAME"), ExportOptions(step=None, dtype="bf16"))

* DIYSink (and LSG with ``full``): the whole model, stock parts under the stock class's keys
  (``save_pretrained``: safetensors shards + index), plus the method as remote code
  (sinktrain/modeling, copied by transformers; ``trust_remote_code=True`` to load);
* LSG: the gates alone (the frozen backbone is the base model, unchanged) with a loader that
  attaches them to the stock model (sinktrain/modeling/lsg_adapter.py).

Either way the directory also holds the processor, ``generation_config.json``, the run record
(``training_run.json``) and a model card, and appears only once complete (output.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import cached_file

from sinktrain.backbones.processor import load_processor
from sinktrain.backbones.registry import backbone_class, load_config
from sinktrain.errors import SinkTrainError
from sinktrain.export.card import CardInfo, eval_results_in, write_model_card
from sinktrain.export.output import check_output, staged_output
from sinktrain.export.remote_model import export_settings, save_model
from sinktrain.export.source import checkpoint_weights, pick_checkpoint, trainer_state
from sinktrain.lsg.gate_file import GateMeta, save_gates
from sinktrain.modeling import lsg_adapter
from sinktrain.modeling.gating import GATES_ATTRIBUTE
from sinktrain.train.run_record import read_run_record

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# the base's processor files that a processor saved without torchvision may lack (Qwen-VL's is then
# its tokenizer and image processor alone), copied as they are
PROCESSOR_FILES = (
    "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json", "chat_template.jinja",
    "chat_template.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
)
RUN_FILE = "training_run.json"


@dataclass
class ExportOptions:
    step: int | None = None  # None: the latest checkpoint
    dtype: str | None = None  # fp32 | bf16 | fp16; None: the run's precision
    full: bool = False  # LSG: the whole model with remote code instead of the gates alone
    max_shard_size: str = "5GB"
    overwrite: bool = False
    license: str | None = None
    datasets: tuple[str, ...] = ()
    repo_id: str | None = None  # where it will live on the Hub (the card's loading snippet)


def is_hub_id(model: str) -> bool:
    return not Path(model).exists() and model.count("/") == 1 and not model.startswith(("demo", "/", "."))


def export_run(run_dir: Path, out: Path, options: ExportOptions) -> Path:
    """Checks everything it can before reading a weight; returns ``out``."""
    record = read_run_record(run_dir)
    settings = export_settings(record)
    tag = pick_checkpoint(run_dir, options.step)
    check_output(out, options.overwrite)
    dtype = DTYPES[options.dtype or record["training"]["precision"]]
    adapter = settings["method"] == "lsg" and not options.full
    with staged_output(out, options.overwrite) as staging:
        weights = checkpoint_weights(run_dir, tag)
        if adapter:
            write_adapter(staging, weights, record, settings)
        else:
            save_model(weights, load_config(record["model_path"]), settings, staging, dtype, options.max_shard_size)
            write_base_files(staging, record)
        state = trainer_state(run_dir, tag)
        (staging / RUN_FILE).write_text(json.dumps({**record, "checkpoint": tag, "step": state["step"]}, indent=2) + "\n")
        write_model_card(staging, card_info(record, settings, state["step"], run_dir, out, options, adapter))
    return out


def write_base_files(directory: Path, record: dict) -> None:
    """The processor as the run used it (pixel limits applied) and the base's generation settings."""
    processor = load_processor(record["model_path"])
    backbone_class(load_config(record["model_path"])).limit_pixels(processor, record["min_pixels"], record["max_pixels"])
    processor.save_pretrained(directory)
    for name in PROCESSOR_FILES:
        source = cached_file(record["model_path"], name, _raise_exceptions_for_missing_entries=False)
        if source and not (directory / name).exists():
            shutil.copyfile(source, directory / name)
    try:
        GenerationConfig.from_pretrained(record["model_path"]).save_pretrained(directory)
    except OSError:
        pass  # the base has none: save_pretrained wrote the model config's


def write_adapter(directory: Path, weights: dict[str, torch.Tensor], record: dict, settings: dict) -> None:
    """LSG's gates (sinktrain's gate files), the base reference and the loader with its code."""
    prefix = GATES_ATTRIBUTE + "."
    gates = {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}
    if not gates:
        raise SinkTrainError("the checkpoint holds no gates (sink_gates.*) although the run recorded LSG")
    config, lsg = load_config(record["model_path"]), settings["lsg"]
    text = config.text_config
    meta = GateMeta(backbone_class(config).family, text.hidden_size, text.num_hidden_layers, lsg["groups"], lsg["layers"], lsg["scale_layout_slots"])
    save_gates(directory, gates, meta)
    base = record["model"] if is_hub_id(record["model"]) else record["model_path"]
    reference = {"base_model": base, "base_revision": record.get("model_revision"), "sinktrain": settings}
    (directory / lsg_adapter.ADAPTER_CONFIG).write_text(json.dumps(reference, indent=2) + "\n")
    loader = Path(lsg_adapter.__file__)
    for source in [loader, *get_relative_import_files(str(loader))]:  # what transformers will load with it
        shutil.copyfile(source, directory / Path(source).name)


def usage(where: str, adapter: bool, rew: bool = False) -> str:
    if adapter:
        return (
            "from transformers.dynamic_module_utils import get_class_from_dynamic_module\n\n"
            f'load_gated_model = get_class_from_dynamic_module("lsg_adapter.load_gated_model", "{where}")\n'
            f'model = load_gated_model("{where}", dtype="auto")  # the stock base model with the gates attached\n'
        )
    return (
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
        f'model = AutoModelForImageTextToText.from_pretrained("{where}", trust_remote_code=True, dtype="auto")\n'
        f'processor = AutoProcessor.from_pretrained("{where}")\n'
        + ('model.set_questions(["What is in the image?"])  # ReW: each batch row\'s question, before each forward\n' if rew else "")
    )


def card_info(record: dict, settings: dict, step: int, run_dir: Path, out: Path, options: ExportOptions, adapter: bool) -> CardInfo:
    method = settings["method"]
    training = {key: record["training"].get(key) for key in ("world_size", "lr", "global_batch_size", "precision", "zero_stage", "data", "seed")}
    method_settings = {key: value for key, value in settings.items() if key in ("sink_first",)} | settings.get("lsg", {})
    if "rew" in settings:
        method_settings["ReW sentence encoder"] = settings["rew"]["sentence_encoder"]
    return CardInfo(
        method=method, family=record["model_type"], base_model=record["model"] if is_hub_id(record["model"]) else None,
        base_revision=record.get("model_revision"), title=f"{Path(run_dir).resolve().name} ({method.upper()}, sinktrain)",
        license=options.license, datasets=list(options.datasets), sink_profile=record["sink_profile"],
        method_settings={**method_settings, "template": record["template"]}, training={"steps": step, **training},
        remote_code=not adapter, adapter=adapter, usage=usage(options.repo_id or str(out), adapter, "rew" in settings),
        eval_results=eval_results_in(Path(run_dir)),
    )
