"""Attach a trained method to a stock model, as an export's config describes it (configuration_sinktrain.py).

    slotted = attach_method(model, config.sinktrain)   # DIYSink's DualMLP + order (+ ReW), or LSG's gates

The modules are built empty (their weights come from the export's checkpoint) by the code
sinktrain trains with: the family's slot map, the DualMLP connector, the gating hooks.
"""

from __future__ import annotations

from .diysink import dual_mlp_connector, sink_to_front
from .errors import SinkTrainError
from .families import SLOT_MAPS
from .gating import LayerGating
from .rew import ReWeighter, ReWeights
from .sinks import SinkRule
from .slotted import SlottedModel

METHODS = ("diysink", "lsg")


def slotted_model(model, settings: dict) -> SlottedModel:
    stock_type = settings.get("stock_model_type")
    if stock_type not in SLOT_MAPS:
        raise SinkTrainError(f"sinktrain export of unknown family {stock_type!r}; known: {', '.join(SLOT_MAPS)}")
    return SLOT_MAPS[stock_type](model, SinkRule.of(settings["sink_rule"]))


def attach_method(model, settings: dict | None) -> SlottedModel:
    settings = settings or {}
    method = settings.get("method")
    if method not in METHODS:
        raise SinkTrainError(
            f"this config's sinktrain.method is {method!r}; a sinktrain export names one of {METHODS} "
            "(re-export it with tools/convert_to_hf.py)"
        )
    slotted = slotted_model(model, settings)
    if method == "diysink":
        slotted.connector = dual_mlp_connector(slotted, slotted.connector_module())
        if settings.get("sink_first", True):
            sink_to_front(slotted)
        if settings.get("rew"):  # the encoder loads at the first set_questions
            rew = settings["rew"]
            ReWeights(slotted, rew["sentence_encoder"], ReWeighter(rew["embedding_width"], rew["hidden"]))
    else:
        lsg = settings["lsg"]
        LayerGating(slotted, lsg["layers"], lsg.get("groups", 2), lsg.get("scale_layout_slots", False))
    return slotted
