"""Tests for sinktrain.train.ds_config's files: the shipped configs, loading and its error
messages, and zero_stage. ("auto" filling and conflicts: test_ds_config_resolve.py.)

Run: python -m pytest tests/train/test_ds_config_files.py -q
The shipped configs are checked against DeepSpeed's own config parser (its pydantic models forbid
unknown keys) and against the real optimizer and scheduler classes the engine would build.
"""

import json

import pytest
import torch

from ds_config_helpers import SCHEDULED, SHIPPED, error_of, make_run, zero2, zero3
from sinktrain.errors import SinkTrainError
from sinktrain.train.ds_config import DS_CONFIG_DIR, load_ds_config, resolve_ds_config, zero_stage


# --- shipped configs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULED)
def test_shipped_config_resolves_and_deepspeed_accepts_it(name):
    from deepspeed.runtime.config import DeepSpeedConfig

    # DeepSpeedConfig outside torch.distributed reads world size 1, so resolve for one rank.
    resolved = resolve_ds_config(load_ds_config(DS_CONFIG_DIR / name), make_run(), set(), 1)
    assert "auto" not in json.dumps(resolved)
    parsed = DeepSpeedConfig(resolved)
    assert parsed.train_batch_size == 16
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert parsed.zero_optimization_stage == zero_stage(resolved)
    assert parsed.monitor_config.tensorboard.output_path == "/runs/llava/tensorboard"
    assert parsed.scheduler_name == "WarmupCosineLR"


def test_lsg_paper_config_has_a_constant_lr_and_a_global_batch_of_128_on_any_rank_count():
    from deepspeed.runtime.config import DeepSpeedConfig

    config = load_ds_config(DS_CONFIG_DIR / "lsg_paper.json")
    resolved = resolve_ds_config(config, make_run(), set(), 1)
    assert "scheduler" not in resolved and "auto" not in json.dumps(resolved)
    parsed = DeepSpeedConfig(resolved)
    assert parsed.scheduler_name is None and parsed.zero_optimization_stage == 3
    # accumulation derived as DeepSpeed does: 128 = 16 per device x accum x ranks
    for world, accum in ((1, 8), (2, 4), (8, 1)):
        resolved = resolve_ds_config(config, make_run(), set(), world)
        assert (resolved["train_batch_size"], resolved["gradient_accumulation_steps"]) == (128, accum)
    with pytest.raises(SinkTrainError, match="train_batch_size 128 needs micro 16 x accum 4 x 2 ranks"):
        resolve_ds_config(config, make_run(grad_accum=2), {"grad_accum"}, 2)  # a --grad_accum the user set is checked


@pytest.mark.parametrize("name", SCHEDULED)
def test_shipped_optimizer_and_scheduler_params_fit_the_real_classes(name):
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    resolved = resolve_ds_config(load_ds_config(DS_CONFIG_DIR / name), make_run(), set(), 1)
    params = dict(resolved["optimizer"]["params"])
    # torch_adam makes the engine build torch.optim.AdamW from the remaining params.
    assert params.pop("torch_adam") is True
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], **params)
    scheduler = WarmupCosineLR(optimizer, **resolved["scheduler"]["params"])
    lrs = []
    for _ in range(1000):
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    # LLaVA's shape: linear warmup from 0 over 3% of the steps, then cosine down to 0. (DeepSpeed
    # starts the decay one step earlier than transformers, so the exact peak is never printed.)
    assert lrs[0] == 0.0
    assert lrs[15] == pytest.approx(2e-5 * 15 / 30)
    assert max(lrs) == pytest.approx(2e-5, rel=1e-4)
    assert lrs[515] == pytest.approx(1e-5, rel=1e-2)  # halfway through the decay
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_shipped_zero_stages_and_offload():
    assert zero_stage(zero2()) == 2
    assert zero_stage(zero3()) == 3
    offload = load_ds_config(DS_CONFIG_DIR / "zero3_offload.json")["zero_optimization"]
    assert offload["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert offload["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert zero3()["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_shipped_config_loads_by_bare_name():
    assert load_ds_config("zero3") == zero3()
    assert load_ds_config("zero3.json") == zero3()


# --- loading ------------------------------------------------------------------------------------


def test_missing_file_lists_the_shipped_configs(tmp_path):
    message = error_of(load_ds_config, tmp_path / "zero4.json")
    assert "zero4.json" in message
    for name in SHIPPED:
        assert name in message


def test_invalid_json_says_line_and_column(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "train_batch_size": "auto",\n  // a comment\n}\n')
    message = error_of(load_ds_config, bad)
    assert "not valid JSON" in message and "line 3, column 3" in message
    assert "no comments" in message


def test_top_level_must_be_an_object(tmp_path):
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    message = error_of(load_ds_config, bad)
    assert "list" in message and "object" in message


def test_duplicate_keys_are_refused(tmp_path):
    bad = tmp_path / "dup.json"
    bad.write_text('{"optimizer": {"params": {"lr": 1, "lr": 2}}}')
    message = error_of(load_ds_config, bad)
    assert "'lr' twice" in message and "keep one" in message


# --- zero_stage ---------------------------------------------------------------------------------


def test_zero_stage_defaults_to_zero_and_rejects_nonsense():
    assert zero_stage({}) == 0
    message = error_of(zero_stage, {"zero_optimization": {"stage": "auto"}})
    assert "zero_optimization.stage" in message and "0, 1, 2 or 3" in message
