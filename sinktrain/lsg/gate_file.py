"""Gate checkpoints: the trained gates alone, as ``gates.safetensors`` + ``gates.json``.

``gates.json`` says what the gates fit: backbone family, LLM hidden size and layer count,
number of groups, and the layers; loading refuses gates made for another backbone or width.
Keys in the safetensors file are ``{layer}.{parameter}`` (e.g. ``10.up.weight``), so single-layer
files from independent runs merge into one stacked file by plain union (tools/stack_gates.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sinktrain.errors import SinkTrainError
from sinktrain.train.checkpoint import replace_atomically
from sinktrain.train.zero import full_state, gathered

WEIGHTS, META = "gates.safetensors", "gates.json"


@dataclass(frozen=True)
class GateMeta:
    family: str
    hidden_size: int
    num_layers: int
    groups: int
    layers: list[int]
    scale_layout_slots: bool = False  # LLaVA-OneVision's newline slots scaled with the other visual tokens


def meta_for(gating) -> GateMeta:
    config = gating.backbone.model.config.text_config
    return GateMeta(
        gating.backbone.family, config.hidden_size, config.num_hidden_layers, gating.groups, list(gating.layers), gating.scale_layout_slots
    )


def gate_state(gating) -> dict[str, torch.Tensor]:
    """Full (gathered) gate weights; collective under ZeRO-3, so call it on every rank."""
    return full_state(gating.gates)


def save_gates(directory: str | Path, state: dict[str, torch.Tensor], meta: GateMeta) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, write in ((WEIGHTS, lambda p: save_file(state, p)), (META, lambda p: Path(p).write_text(json.dumps(asdict(meta), indent=2)))):
        replace_atomically(directory / name, lambda tmp: write(str(tmp)))


def read_gates(directory: str | Path) -> tuple[dict[str, torch.Tensor], GateMeta]:
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / META).is_file():
        raise SinkTrainError(
            f"{directory} holds no gate checkpoint ({WEIGHTS} + {META}); pass a directory written by "
            "recipes/lsg_train.py (e.g. runs/NAME/gates) or tools/stack_gates.py"
        )
    return load_file(str(directory / WEIGHTS)), GateMeta(**json.loads((directory / META).read_text()))


def check_fits(meta: GateMeta, backbone, source: str) -> None:
    config = backbone.model.config.text_config
    mine = (backbone.family, config.hidden_size, config.num_hidden_layers)
    theirs = (meta.family, meta.hidden_size, meta.num_layers)
    if mine != theirs:
        raise SinkTrainError(
            f"gates in {source} were trained on a {theirs[0]} backbone with hidden size {theirs[1]} and {theirs[2]} "
            f"layers, but this model is {mine[0]} with {mine[1]} and {mine[2]}; use gates trained on this model"
        )


def load_into(gating, state: dict[str, torch.Tensor]) -> None:
    params = dict(gating.gates.named_parameters())
    missing = sorted(set(params) - set(state))
    if missing:
        raise SinkTrainError(f"gate checkpoint lacks {missing[:4]}; it was trained for other layers or groups")
    with gathered(params.values(), modifier_rank=0), torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def gating_from_checkpoint(backbone, directory: str | Path):
    """Attach gates saved by recipes/lsg_train.py or tools/stack_gates.py to a backbone."""
    from sinktrain.lsg.gating import LayerGating

    state, meta = read_gates(directory)
    check_fits(meta, backbone, str(directory))
    gating = LayerGating(backbone, meta.layers, meta.groups, meta.scale_layout_slots)
    load_into(gating, state)
    return gating
