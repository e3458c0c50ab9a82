"""A trained model as a Hugging Face directory with remote code: the stock family's classes plus
the method, built by sinktrain/modeling (copied into the export by transformers' own
``custom_object_save``), so ``AutoModelForImageTextToText.from_pretrained(dir,
trust_remote_code=True)`` needs no sinktrain and runs the forward it was trained with.

    settings = export_settings(record)                      # the config's "sinktrain" field
    save_model(weights, stock_config, settings, out, torch.bfloat16, "5GB")
"""

from __future__ import annotations

from pathlib import Path

import torch

from sinktrain.errors import SinkTrainError
from sinktrain.modeling.configuration_sinktrain import CONFIGS
from sinktrain.modeling.modeling_sinktrain import MODELS
from sinktrain.modeling.sinks import SinkRule

AUTO_CLASS = "AutoModelForImageTextToText"
NOT_COPIED = ("model_type", "architectures", "transformers_version", "auto_map", "dtype", "torch_dtype")
REMOTE_FILES = ("configuration_sinktrain.py", "modeling_sinktrain.py")


def export_settings(record: dict) -> dict:
    """The run record's method as the export config's ``sinktrain`` field (configuration_sinktrain.py)."""
    method = dict(record["method"])
    name = method.pop("method")
    settings = {"method": name, "stock_model_type": record["model_type"], "sink_rule": SinkRule.of(record["sink_profile"]).to_dict()}
    if name == "diysink":
        settings["sink_first"] = method["sink_first"]
        if "rew" in method:
            settings["rew"] = method["rew"]
    elif name == "lsg":
        settings["lsg"] = method
    else:
        raise SinkTrainError(f"this run trained no sinktrain method (recipe {record.get('recipe')!r}); nothing to export")
    return settings


def export_config(stock_config, settings: dict):
    model_type = stock_config.model_type
    if model_type not in CONFIGS:
        raise SinkTrainError(f"no export for model type {model_type!r}; exports exist for {', '.join(CONFIGS)}")
    fields = {key: value for key, value in stock_config.to_dict().items() if key not in NOT_COPIED}
    return CONFIGS[model_type](sinktrain=settings, **fields)


def build_model(weights: dict[str, torch.Tensor], config, dtype: torch.dtype):
    """The export's model with the checkpoint's weights (built on the meta device: no second copy)."""
    model_class = MODELS[config.sinktrain["stock_model_type"]]
    with torch.device("meta"):
        model = model_class(config)
    try:
        model.load_state_dict({key: value.to(dtype) for key, value in weights.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise SinkTrainError(
            f"the checkpoint does not fit the model the run recorded ({str(err)[:300]}); was run_config.json edited, or the "
            "checkpoint copied from another run?"
        ) from err
    model.config.dtype = dtype
    return model


def save_model(weights: dict[str, torch.Tensor], stock_config, settings: dict, out: Path, dtype: torch.dtype, max_shard_size: str) -> None:
    config = export_config(stock_config, settings)
    model = build_model(weights, config, dtype)
    type(config).register_for_auto_class()  # so save_pretrained copies the code and writes auto_map
    type(model).register_for_auto_class(AUTO_CLASS)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    missing = [name for name in REMOTE_FILES if not (out / name).is_file()]
    if missing:
        raise SinkTrainError(f"transformers did not copy the remote code {missing} into {out}; the export would not load")
