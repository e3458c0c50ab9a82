"""connector.safetensors (sinktrain.diysink.connector_file): what stage 1 writes, stage 2 loads, and a
file from another family, vision tower or with a projector missing is refused before it loads."""

import dataclasses

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.diysink.attach import attach_dual_mlp
from sinktrain.diysink.connector_file import connector_metadata, save_connector
from sinktrain.errors import SinkTrainError

from families import perturb


@pytest.fixture
def llava():
    return load_backbone(str(demo.ensure_demo_model("llava")))


def stage1_file(backbone, path, trained=("sink", "non")):
    connector = attach_dual_mlp(backbone, sink_first=False)
    perturb(connector.f_sink, seed=1)
    save_connector(connector, path, connector_metadata(backbone, trained), is_main=True)
    return connector


def test_round_trip_with_metadata(llava, tmp_path):
    path = tmp_path / "connector.safetensors"
    donor = stage1_file(load_backbone(str(demo.ensure_demo_model("llava"))), path, trained=("sink",))
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["family"] == "llava" and meta["trained"] == "f_sink" and meta["llm_width"] == str(llava.llm_width)
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary sibling
    loaded = attach_dual_mlp(llava, connector_init=str(path))
    for name, value in donor.state_dict().items():
        assert torch.equal(dict(loaded.named_parameters())[name], value), name


def test_another_family_is_refused(llava, tmp_path):
    path = tmp_path / "qwen.safetensors"
    stage1_file(load_backbone(str(demo.ensure_demo_model("qwen2_vl"))), path)
    with pytest.raises(SinkTrainError, match=r"trained on a qwen2_vl backbone .* this model is llava"):
        attach_dual_mlp(llava, connector_init=str(path))


def test_another_vision_tower_is_refused(llava, tmp_path):
    path = tmp_path / "other_tower.safetensors"
    stage1_file(load_backbone(str(demo.ensure_demo_model("llava"))), path)
    meta = {**safe_open(str(path), "pt").metadata(), "vision_tower": "siglip-so400m-14-384"}
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(SinkTrainError, match=r"vision tower siglip-so400m-14-384.*pass the stage-1 connector of this model"):
        attach_dual_mlp(llava, connector_init=str(path))


def test_a_missing_projector_is_named(llava, tmp_path):
    path = tmp_path / "sink_only.safetensors"
    stage1_file(load_backbone(str(demo.ensure_demo_model("llava"))), path)
    state = {name: value for name, value in load_file(str(path)).items() if name.startswith("f_sink.")}
    save_file(state, str(path), metadata=safe_open(str(path), "pt").metadata())
    with pytest.raises(SinkTrainError, match=r"holds no f_non.\* weights"):
        attach_dual_mlp(llava, connector_init=str(path))


def test_sink_rule_is_recorded(llava):
    profile = dataclasses.replace(llava.sink_profile, tau_v=7.5)
    llava.sink_profile = profile
    assert "tau=7.5" in connector_metadata(llava, ("sink", "non"))["sink_rule"]
