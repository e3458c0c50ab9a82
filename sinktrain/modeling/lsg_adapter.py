"""LSG gates exported by sinktrain (tools/convert_to_hf.py, without --full), attached to the stock
base model they were trained on, which stays unchanged (LSG trains the gates alone):

    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    load_gated_model = get_class_from_dynamic_module("lsg_adapter.load_gated_model", "USER/REPO")
    model = load_gated_model("USER/REPO", dtype="auto")          # the base, from its recorded id
    # or attach to a stock model you loaded yourself:
    attach_gates = get_class_from_dynamic_module("lsg_adapter.attach_gates", "USER/REPO")
    attach_gates(model, "USER/REPO")

The adapter holds ``gates.safetensors`` + ``gates.json`` (sinktrain's gate files, so
``tools/evaluate.py --gates DIR`` reads it too) and ``sinktrain_lsg.json``: the base model's id and
revision and the config's ``sinktrain`` settings (configuration_sinktrain.py). The gates run
through the code sinktrain trains them with (this folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText
from transformers.utils import cached_file

from .errors import SinkTrainError
from .gating import GATES_ATTRIBUTE
from .method import attach_method
from .slotted import SlottedModel

ADAPTER_CONFIG, GATES = "sinktrain_lsg.json", "gates.safetensors"


def adapter_file(adapter: str | Path, name: str, **hub) -> str:
    """A file of the adapter: a local directory or a Hub repo id (``hub``: revision, token, ...)."""
    return cached_file(str(adapter), name, **hub)


def read_adapter(adapter: str | Path, **hub) -> dict:
    config = json.loads(Path(adapter_file(adapter, ADAPTER_CONFIG, **hub)).read_text())
    if config.get("sinktrain", {}).get("method") != "lsg":
        raise SinkTrainError(f"{adapter} is not a sinktrain LSG adapter ({ADAPTER_CONFIG} names no lsg method)")
    return config


def attach_gates(model, adapter: str | Path, **hub) -> SlottedModel:
    """Attach the adapter's gates to a stock model of its base; returns the slotted model (``.gating``)."""
    config = read_adapter(adapter, **hub)
    stock_type = config["sinktrain"]["stock_model_type"]
    if model.config.model_type != stock_type:
        raise SinkTrainError(f"these gates were trained on a {stock_type} model, not {model.config.model_type}; load {config.get('base_model')}")
    slotted = attach_method(model, config["sinktrain"])
    gates = getattr(model, GATES_ATTRIBUTE)
    gates.load_state_dict(load_file(adapter_file(adapter, GATES, **hub)), strict=True)
    for layer, gate in gates.items():  # next to its decoder layer (device_map may spread them)
        gate.to(next(slotted.decoder_layers()[int(layer)].parameters()).device)
    return slotted


def load_gated_model(adapter: str | Path, base: str | None = None, hub: dict | None = None, **from_pretrained):
    """The stock base (``base``, default the recorded one at its recorded revision) with the gates attached."""
    hub = hub or {}
    config = read_adapter(adapter, **hub)
    if base is None:
        base = config["base_model"]
        from_pretrained.setdefault("revision", config.get("base_revision"))
    model = AutoModelForImageTextToText.from_pretrained(base, **from_pretrained)
    attach_gates(model, adapter, **hub)
    return model
