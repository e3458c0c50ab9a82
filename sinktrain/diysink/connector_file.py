"""``connector.safetensors``: a DualMLP connector's weights alone, what stage 1 writes and
``recipes/diysink_finetune.py --connector_init`` reads.

Keys are the connector's own (``f_sink.*``, ``f_non.*``); the safetensors metadata says which
backbone family and vision tower the connector maps from, the LLM width it maps to, which of the
two projectors were trained and with which sink rule, so a file from another backbone is refused
before it loads. Writes are atomic (a temporary sibling, renamed into place).
"""

from __future__ import annotations

import logging
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sinktrain.backbones.base import Backbone
from sinktrain.modeling.connector import DualMLPConnector
from sinktrain.errors import SinkTrainError
from sinktrain.train.checkpoint import replace_atomically
from sinktrain.train.zero import full_state, load_state

logger = logging.getLogger("sinktrain")
FILENAME = "connector.safetensors"
KIND = "sinktrain.dual_mlp_connector"
FIX = "save it from a DualMLP connector of this backbone (recipes/diysink_pretrain.py writes one)"


def sink_rule(backbone: Backbone) -> str:
    profile = backbone.sink_profile
    dims = f" dims={profile.vit_dims}" if profile.criterion == "dim_threshold" else ""
    return f"{profile.criterion}{dims} tau={profile.tau_v:g}"


def connector_metadata(backbone: Backbone, trained: tuple[str, ...]) -> dict[str, str]:
    return {
        "kind": KIND,
        "family": backbone.family,
        "vision_tower": backbone.vision_tower_id(backbone.model.config),
        "llm_width": str(backbone.llm_width),
        "trained": ",".join(f"f_{part}" for part in trained),
        "sink_rule": sink_rule(backbone),
    }


def save_connector(connector: DualMLPConnector, path: Path, metadata: dict[str, str], is_main: bool) -> None:
    """Gather the connector (every rank takes part under ZeRO-3); rank 0 writes ``path`` atomically."""
    state = full_state(connector)
    if not is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def check_metadata(backbone: Backbone, path: str) -> None:
    with safe_open(path, "pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("kind") != KIND:
        return  # a file written by hand: keys and shapes are still checked
    mine = {"family": backbone.family, "vision_tower": backbone.vision_tower_id(backbone.model.config)}
    for key, value in mine.items():
        if meta.get(key) != value:
            raise SinkTrainError(
                f"--connector_init {path} was trained on a {meta.get('family')} backbone with vision tower "
                f"{meta.get('vision_tower')}, but this model is {mine['family']} with {mine['vision_tower']}; "
                "pass the stage-1 connector of this model's family and vision tower"
            )
    if meta.get("sink_rule") != sink_rule(backbone):
        logger.warning(
            "--connector_init %s was pretrained with V-sinks by %s, this run splits tokens by %s: each projector now "
            "gets tokens it was not pretrained on (pass the same --sink_rule / --sink_profile as stage 1)",
            path, meta.get("sink_rule"), sink_rule(backbone),
        )


def check_keys(state: dict, connector: DualMLPConnector, path: str) -> None:
    expected = {name for name, _ in connector.named_parameters()}
    for part in ("f_sink", "f_non"):
        if not any(name.startswith(part + ".") for name in state):
            raise SinkTrainError(f"--connector_init {path} holds no {part}.* weights (it has {sorted(state)[:3]}...); {FIX}")
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise SinkTrainError(
            f"--connector_init {path} does not match this backbone's connector (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): it is another family's; {FIX}"
        )


def load_connector_weights(backbone: Backbone, connector: DualMLPConnector, path: str) -> None:
    if not Path(path).is_file():
        raise SinkTrainError(f"--connector_init {path} does not exist; pass a {FILENAME} with f_sink.* and f_non.* weights")
    check_metadata(backbone, path)
    state = load_file(path)
    check_keys(state, connector, path)
    # copy_ broadcasts, so a wrong shape could load silently; ds_shape is the full shape under ZeRO-3.
    wrong = [
        f"{name} {list(state[name].shape)} (expected {list(getattr(p, 'ds_shape', p.shape))})"
        for name, p in connector.named_parameters()
        if tuple(state[name].shape) != tuple(getattr(p, "ds_shape", p.shape))
    ]
    if wrong:
        raise SinkTrainError(f"--connector_init {path} has tensors of the wrong shape: {', '.join(wrong)}; {FIX}")
    load_state(connector, state)
