"""Tests for sink profiles (schema, JSON files, built-ins) and how the registry picks one.

Run:
    python -m pytest tests/backbones/test_profiles.py -q
"""

import dataclasses
import json
import logging
import math
from contextlib import contextmanager

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    Qwen2Config,
    SiglipVisionConfig,
)

from sinktrain.backbones.profiles import (
    KNOWN_LLM_PROFILES,
    SinkProfile,
    known_profile,
    load_profile,
    profile_from_dict,
    save_profile,
)
from sinktrain.backbones.registry import PROFILE_FILE, load_backbone, resolve_profile
from sinktrain.errors import SinkTrainError


def make_profile(**overrides) -> SinkProfile:
    fields = dict(
        name="test",
        vision_tower="some-vit",
        vit_dims=[3],
        vit_layer=-2,
        criterion="dim_threshold",
        tau_v=50.0,
        llm_dims=[7, 1],
        tau_l=5.0,  # after RMSNorm: within reach of two dims at width 128 (sqrt(64) = 8)
        hidden_size_vit=64,
        hidden_size_llm=128,
        stats={"median_abs": 0.5, "per_dim": [1, 2]},
    )
    fields.update(overrides)
    return SinkProfile(**fields)


# -- SinkProfile -------------------------------------------------------------------------------


def test_profile_refuses_unknown_criterion():
    with pytest.raises(SinkTrainError, match="criterion 'max'.*unknown.*dim_threshold"):
        make_profile(criterion="max")


def test_profile_dim_threshold_needs_vit_dims():
    with pytest.raises(SinkTrainError, match="dim_threshold needs vit_dims"):
        make_profile(vit_dims=[])
    # The L2-norm criterion reads no channel, so it needs none.
    assert make_profile(criterion="l2_norm", vit_dims=[]).vit_dims == []


def test_profile_llm_dims_need_tau_l():
    with pytest.raises(SinkTrainError, match="llm_dims are given but tau_l is missing"):
        make_profile(tau_l=None)
    assert make_profile(llm_dims=[], tau_l=None).llm_dims == []


def test_profile_json_round_trip(tmp_path):
    profile = make_profile()
    path = tmp_path / "sub" / "p.json"
    save_profile(profile, path)
    assert json.loads(path.read_text())["vit_dims"] == [3]
    assert load_profile(path) == profile
    assert load_profile(str(path)) == profile
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed into place


def test_profile_unknown_keys_are_refused(tmp_path):
    data = dataclasses.asdict(make_profile())
    data["tau_vv"] = 3.0
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SinkTrainError, match=r"unknown keys \['tau_vv'\].*sinktrain/backbones/profiles.py") as err:
        load_profile(path)
    assert str(path) in str(err.value)


def test_profile_missing_keys_are_named():
    data = dataclasses.asdict(make_profile())
    del data["tau_v"], data["vit_layer"]
    with pytest.raises(SinkTrainError, match=r"missing keys \['tau_v', 'vit_layer'\]"):
        profile_from_dict(data)


def test_profile_missing_file_points_to_find_sink_dims(tmp_path):
    with pytest.raises(SinkTrainError, match="does not exist.*tools/find_sink_dims.py.*--sink_profile"):
        load_profile(tmp_path / "nope.json")


def test_profile_bad_json_and_non_object(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SinkTrainError, match="not valid JSON"):
        load_profile(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(SinkTrainError, match="must hold a JSON object"):
        load_profile(bad)


def test_known_profile_llava_1_5_7b():
    """LSG Table S7 "60 / 20", L-sinks read after weightless RMSNorm as VAR does."""
    profile = known_profile("clip-vit-l-14-336", "llama-2-7b")
    assert profile.vit_dims == [650]
    assert profile.llm_dims == [2533, 1415]
    assert profile.vit_layer == -2 and profile.criterion == "dim_threshold"
    assert (profile.tau_v, profile.tau_l, profile.llm_rms_norm) == (60.0, 20.0, True)
    assert (profile.hidden_size_vit, profile.hidden_size_llm) == (1024, 4096)


def test_known_profile_llava_onevision_reads_l_sinks_raw():
    """LSG Table S7 "40 / 50": the paper's L-sink rule on raw magnitudes for this model."""
    profile = known_profile("siglip-so400m-14-384", "qwen2-7b")
    assert profile.vit_dims == [1076] and profile.llm_dims == [458, 2570]
    assert (profile.tau_v, profile.tau_l, profile.llm_rms_norm, profile.vit_layer) == (40.0, 50.0, False, -1)
    assert (profile.hidden_size_vit, profile.hidden_size_llm) == (1152, 3584)


def test_every_builtin_llm_profile_states_its_l_sink_values():
    for key, facts in KNOWN_LLM_PROFILES.items():
        assert isinstance(facts.get("llm_rms_norm"), bool), key
        if facts["llm_rms_norm"]:  # a built-in threshold RMSNorm can reach with every dim equally massive
            assert facts["tau_l"] <= math.sqrt(facts["hidden_size_llm"] / len(facts["llm_dims"])), key


@contextmanager
def sinktrain_warnings():
    """Records the sinktrain logger's warnings (setup_logging turns its propagation off, so caplog
    on the root logger would miss them)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("sinktrain")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_rms_threshold_out_of_reach_is_refused():
    """After weightless RMSNorm no channel exceeds sqrt(D) = sqrt(128) = 11.3."""
    with pytest.raises(SinkTrainError, match=r"tau_l 12 on RMS-normalised values can never fire.*sqrt\(128\) = 11.3.*read L-sinks raw.*lower tau_l"):
        make_profile(tau_l=12.0)
    assert make_profile(tau_l=12.0, llm_rms_norm=False).tau_l == 12.0  # raw: any magnitude
    assert make_profile(tau_l=12.0, llm_dims=[]).llm_dims == []  # no L-sink dims: nothing to threshold
    unsized = make_profile(tau_l=12.0, hidden_size_llm=None)  # width unknown until it meets a model
    with pytest.raises(SinkTrainError, match="can never fire"):
        unsized.check_fits(64, 128)
    unsized.check_fits(64, 256)


def test_rms_threshold_above_shared_bound_warns():
    """Two dims equally massive reach at most sqrt(128 / 2) = 8 each after RMSNorm."""
    with sinktrain_warnings() as records:
        make_profile(tau_l=7.9)
        assert not records
        make_profile(tau_l=9.0)
    assert len(records) == 1 and "above sqrt(128 / 2) = 8.0" in records[0].getMessage()


def test_demo_profiles_pass_the_reach_guard():
    from sinktrain.demo import llava, qwen2_vl

    with sinktrain_warnings() as records:
        profiles = [llava.demo_profile(), qwen2_vl.demo_profile(windowed=False), qwen2_vl.demo_profile(windowed=True)]
    assert not records and all(p.llm_rms_norm for p in profiles)


def test_known_profile_without_llm_facts_and_unknown_tower():
    profile = known_profile("clip-vit-l-14-336", "some-other-llm")
    assert profile.vit_dims == [650] and profile.llm_dims == [] and profile.hidden_size_llm is None
    assert known_profile("siglip-so400m-14-384", "qwen2-7b").vit_dims == [1076]
    assert known_profile("no-such-tower", "llama-2-7b") is None


def test_check_fits_refuses_other_widths():
    profile = make_profile()
    profile.check_fits(64, 128)
    with pytest.raises(SinkTrainError, match="vision width of 64.*model's is 1024.*find_sink_dims"):
        profile.check_fits(1024, 128)
    with pytest.raises(SinkTrainError, match="LLM width of 128.*model's is 4096"):
        profile.check_fits(64, 4096)


def test_check_fits_refuses_dims_beyond_hidden_size():
    profile = make_profile(vit_dims=[70], hidden_size_vit=None, hidden_size_llm=None)
    with pytest.raises(SinkTrainError, match=r"dims \[70\] exceed"):
        profile.check_fits(64, 128)
    profile.check_fits(128, 128)


# -- registry: which profile a model gets ------------------------------------------------------


def llava_1_5_7b_config() -> LlavaConfig:
    """The real LLaVA-1.5-7B shapes (config only: never instantiated)."""
    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
        patch_size=14, image_size=336,
    )
    text = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_hidden_layers=32)
    return LlavaConfig(vision_config=vision, text_config=text)


def test_resolve_profile_flag_beats_model_dir(demo_model_dir, tmp_path):
    flag = make_profile(name="from-flag", vit_dims=[5], llm_dims=[], tau_l=None)
    save_profile(flag, tmp_path / "flag.json")
    backbone = load_backbone(str(demo_model_dir), sink_profile=str(tmp_path / "flag.json"))
    assert backbone.sink_profile == flag


def test_resolve_profile_model_dir_file(demo_model_dir):
    assert (demo_model_dir / PROFILE_FILE).is_file()
    backbone = load_backbone(str(demo_model_dir))
    assert backbone.sink_profile == load_profile(demo_model_dir / PROFILE_FILE)
    assert backbone.sink_profile.name == "sinktrain-demo"


def test_resolve_profile_model_dir_beats_builtin(tmp_path):
    own = make_profile(name="own", hidden_size_vit=1024, hidden_size_llm=4096)
    save_profile(own, tmp_path / PROFILE_FILE)
    assert resolve_profile(str(tmp_path), llava_1_5_7b_config(), None) == own


def test_resolve_profile_builtin(tmp_path):
    profile = resolve_profile(str(tmp_path), llava_1_5_7b_config(), None)
    assert profile == known_profile("clip-vit-l-14-336", "llama-2-7b")
    assert profile.name == "clip-vit-l-14-336+llama-2-7b"


def llava_onevision_7b_config() -> LlavaOnevisionConfig:
    """llava-onevision-qwen2-7b-ov-hf's shapes: SigLIP-SO400M (26 layers kept, the last one feeds
    the projector, 'full' strategy) and Qwen2-7B (config only: never instantiated)."""
    vision = SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=26, patch_size=14, image_size=384,
    )
    text = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_hidden_layers=28, num_key_value_heads=4)
    return LlavaOnevisionConfig(vision_config=vision, text_config=text, vision_feature_layer=-1, vision_feature_select_strategy="full")


def test_resolve_profile_builtin_llava_onevision(tmp_path):
    """The real model gets the SigLIP + Qwen2-7B profile, and it passes the family's checks (the
    projector's layer, widths): V-sinks on dim 1076 at tau 40, raw L-sinks at 50."""
    profile = resolve_profile(str(tmp_path), llava_onevision_7b_config(), None)
    assert profile == known_profile("siglip-so400m-14-384", "qwen2-7b")
    assert profile.vit_layer == -1 and not profile.llm_rms_norm


def test_resolve_profile_checks_widths_of_flag_file(demo_model_dir, tmp_path):
    wide = make_profile(name="wide", hidden_size_vit=1024)
    save_profile(wide, tmp_path / "wide.json")
    with pytest.raises(SinkTrainError, match="'wide' was made for a vision width of 1024.*is 64"):
        load_backbone(str(demo_model_dir), sink_profile=str(tmp_path / "wide.json"))


def test_unknown_vision_tower_without_profile_fails(tmp_path):
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=16, projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=64,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=63)
    LlavaForConditionalGeneration(config).save_pretrained(tmp_path)
    assert not (tmp_path / PROFILE_FILE).exists()
    with pytest.raises(SinkTrainError) as err:
        load_backbone(str(tmp_path))
    message = str(err.value)
    assert "clip_vision_model-h32-p16-32" in message
    assert "tools/find_sink_dims.py" in message and "--sink_profile" in message


def test_unsupported_architecture_lists_supported(tmp_path):
    config = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=32,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(SinkTrainError) as err:
        load_backbone(str(tmp_path))
    message = str(err.value)
    assert "'llama'" in message and "LlamaForCausalLM" in message
    assert "llava (LlavaForConditionalGeneration)" in message


def test_load_backbone_without_a_config(tmp_path):
    with pytest.raises(SinkTrainError, match="cannot load a model config"):
        load_backbone(str(tmp_path / "missing-model"))


def test_load_backbone_dtype(demo_model_dir):
    backbone = load_backbone(str(demo_model_dir), dtype=torch.bfloat16)
    assert next(backbone.model.parameters()).dtype == torch.bfloat16
