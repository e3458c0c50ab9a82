"""Tests for sinktrain.train.ds_config's resolution: "auto" filling, concrete values against
explicit flags, the global batch, precision, schedulers, "auto" it cannot fill, and reading a
resolved config back. (Shipped configs, loading, zero_stage: test_ds_config_files.py.)

Run: python -m pytest tests/train/test_ds_config_resolve.py -q
"""

import json
import math

import pytest
import torch

from ds_config_helpers import error_of, make_run, resolve, zero2, zero3
from sinktrain.train.ds_config import settings_from_config


# --- "auto" filling -----------------------------------------------------------------------------


def test_auto_takes_the_run_values():
    resolved = resolve(zero3(), world_size=4, per_device_batch_size=4, grad_accum=8)
    assert resolved["train_micro_batch_size_per_gpu"] == 4
    assert resolved["gradient_accumulation_steps"] == 8
    assert resolved["train_batch_size"] == 4 * 8 * 4
    assert resolved["gradient_clipping"] == 1.0
    assert resolved["optimizer"]["params"]["lr"] == 2e-5
    assert resolved["optimizer"]["params"]["weight_decay"] == 0.0
    assert resolved["scheduler"]["params"]["total_num_steps"] == 1000
    assert resolved["scheduler"]["params"]["warmup_num_steps"] == 30
    assert resolved["tensorboard"]["output_path"] == "/runs/llava/tensorboard"


def test_auto_zero3_sizes_follow_transformers_hidden_size_rule():
    zero = resolve(zero3(), hidden_size=4096)["zero_optimization"]
    assert zero["reduce_bucket_size"] == 4096 * 4096
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 4096 * 4096)
    assert zero["stage3_param_persistence_threshold"] == 10 * 4096


def test_resolve_returns_a_new_dict_and_leaves_the_input_alone():
    config = zero3()
    before = json.dumps(config)
    resolved = resolve(config)
    assert resolved is not config
    assert json.dumps(config) == before


def test_warmup_steps_round_up_and_never_reach_zero():
    assert resolve(zero2(), max_steps=10)["scheduler"]["params"]["warmup_num_steps"] == math.ceil(0.3)
    # DeepSpeed >= 0.19.6 rejects 0 warmup steps; no warmup still gets one.
    assert resolve(zero2(), warmup_ratio=0.0)["scheduler"]["params"]["warmup_num_steps"] == 1


def test_missing_flag_keys_count_as_auto():
    config = zero2()
    del config["gradient_clipping"], config["gradient_accumulation_steps"]
    resolved = resolve(config, grad_accum=2, max_grad_norm=0.5)
    assert resolved["gradient_clipping"] == 0.5
    assert resolved["gradient_accumulation_steps"] == 2
    assert resolved["train_batch_size"] == 16 * 2 * 8


# --- concrete values and explicit flags ---------------------------------------------------------


def test_concrete_value_wins_over_a_flag_left_at_its_default():
    config = zero2()
    config["optimizer"]["params"]["lr"] = 1e-3
    config["scheduler"]["params"]["total_num_steps"] = 500
    resolved = resolve(config)
    assert resolved["optimizer"]["params"]["lr"] == 1e-3
    settings = settings_from_config(resolved, make_run())
    assert settings.lr == 1e-3
    assert settings.max_steps == 500
    # warmup follows the steps that actually run
    assert resolved["scheduler"]["params"]["warmup_num_steps"] == math.ceil(0.03 * 500)


def test_concrete_value_that_contradicts_an_explicit_flag_is_an_error():
    config = zero2()
    config["optimizer"]["params"]["lr"] = 1e-3
    message = error_of(resolve, config, explicit={"lr"})
    assert "optimizer.params.lr" in message
    assert "0.001" in message and "2e-05" in message
    assert "remove --lr" in message
    assert 'set the key optimizer.params.lr to "auto"' in message


def test_concrete_value_equal_to_an_explicit_flag_is_fine():
    config = zero2()
    config["train_micro_batch_size_per_gpu"] = 16
    assert resolve(config, explicit={"per_device_batch_size"})["train_micro_batch_size_per_gpu"] == 16


def test_explicit_max_steps_against_a_concrete_total_is_an_error():
    config = zero2()
    config["scheduler"]["params"]["total_num_steps"] = 500
    message = error_of(resolve, config, explicit={"max_steps"})
    assert "scheduler.params.total_num_steps" in message and "--max_steps" in message


# --- global batch -------------------------------------------------------------------------------


def test_train_batch_size_mismatch_names_world_size_and_the_fix():
    config = zero2()
    config["train_batch_size"] = 128
    message = error_of(resolve, config, explicit={"grad_accum"}, world_size=2, per_device_batch_size=4, grad_accum=8)
    assert "train_batch_size 128 needs micro 4 x accum 16 x 2 ranks = 128" in message
    assert "micro 4 x accum 8 x 2 ranks = 64" in message
    assert "--grad_accum 16" in message
    assert '"train_batch_size" to "auto"' in message


def test_train_batch_size_with_auto_accum_derives_it_unless_grad_accum_is_set():
    config = zero2()
    config["train_batch_size"] = 128
    assert resolve(config, world_size=2, per_device_batch_size=4, grad_accum=8)["gradient_accumulation_steps"] == 16
    config["gradient_accumulation_steps"] = 8  # a concrete value is the file's own: checked, not replaced
    assert "needs micro 4 x accum 16" in error_of(resolve, config, world_size=2, per_device_batch_size=4)


def test_train_batch_size_that_no_accum_can_reach():
    config = zero2()
    config["train_batch_size"] = 100
    message = error_of(resolve, config, world_size=3, per_device_batch_size=4)
    assert "not a multiple of micro 4 x 3 ranks = 12" in message
    assert "--per_device_batch_size" in message


def test_matching_concrete_train_batch_size_is_kept():
    config = zero2()
    config["train_batch_size"] = 128
    assert resolve(config, world_size=8)["train_batch_size"] == 128


# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("precision,bf16,fp16", [("fp32", False, False), ("bf16", True, False), ("fp16", False, True)])
def test_precision_fills_bf16_and_fp16(precision, bf16, fp16):
    resolved = resolve(zero2(), precision=precision)
    assert resolved["bf16"]["enabled"] is bf16 and resolved["fp16"]["enabled"] is fp16
    assert settings_from_config(resolved, make_run()).precision == precision


def test_bf16_and_fp16_both_enabled_is_an_error():
    config = zero2()
    config["bf16"]["enabled"] = True
    config["fp16"]["enabled"] = True
    message = error_of(resolve, config)
    assert "both bf16 and fp16" in message and "false" in message


def test_explicit_precision_against_the_config_is_an_error():
    config = zero2()
    config["fp16"]["enabled"] = True
    message = error_of(resolve, config, explicit={"precision"}, precision="bf16")
    assert "bf16.enabled" in message or "fp16.enabled" in message
    assert "remove --precision" in message


def test_unknown_precision_is_an_error():
    message = error_of(resolve, zero2(), precision="fp8")
    assert "fp8" in message and "fp32, bf16, fp16" in message


# --- schedulers ---------------------------------------------------------------------------------


def test_warmup_lr_fills_max_lr_and_runs_in_deepspeed():
    from deepspeed.runtime.lr_schedules import WarmupLR

    config = zero2()
    config["scheduler"] = {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                          "warmup_num_steps": "auto", "warmup_type": "auto"}}
    params = resolve(config)["scheduler"]["params"]
    assert params == {"warmup_min_lr": 0.0, "warmup_max_lr": 2e-5, "warmup_num_steps": 30, "warmup_type": "linear"}
    WarmupLR(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), **params)


def test_warmup_decay_lr_fills_total_and_max_lr():
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    config = zero2()
    config["scheduler"] = {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto", "warmup_max_lr": "auto",
                                                               "warmup_num_steps": "auto"}}
    params = resolve(config, lr=1e-3)["scheduler"]["params"]
    assert params == {"total_num_steps": 1000, "warmup_max_lr": 1e-3, "warmup_num_steps": 30}
    WarmupDecayLR(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), **params)


def test_warmup_max_lr_that_disagrees_with_the_optimizer_lr_is_an_error():
    config = zero2()
    config["scheduler"] = {"type": "WarmupLR", "params": {"warmup_max_lr": 1e-3}}
    message = error_of(resolve, config)
    assert "warmup_max_lr" in message and "0.001" in message and "2e-05" in message
    assert '"auto"' in message


def test_no_scheduler_is_a_constant_lr_but_an_explicit_warmup_is_refused():
    config = zero2()
    del config["scheduler"]
    assert "scheduler" not in resolve(config)
    message = error_of(resolve, config, explicit={"warmup_ratio"})
    assert "--warmup_ratio" in message and "no \"scheduler\"" in message and "drop the flag" in message


# --- "auto" the resolver cannot fill ------------------------------------------------------------


def test_unknown_auto_key_names_its_path():
    config = zero2()
    config["zero_optimization"]["allgather_bucket_size"] = "auto"
    message = error_of(resolve, config)
    assert "zero_optimization.allgather_bucket_size" in message
    assert "concrete value" in message


def test_auto_that_the_scheduler_type_does_not_take_is_refused():
    config = zero2()
    config["scheduler"] = {"type": "WarmupLR", "params": {"total_num_steps": "auto"}}
    assert "scheduler.params.total_num_steps" in error_of(resolve, config)


def test_auto_inside_a_list_names_its_index():
    config = zero2()
    config["optimizer"]["params"]["betas"] = ["auto", 0.999]
    assert "optimizer.params.betas[0]" in error_of(resolve, config)


def test_auto_bucket_sizes_need_a_hidden_size():
    message = error_of(resolve, zero3(), hidden_size=None)
    assert "zero_optimization.stage3_prefetch_bucket_size" in message
    assert "hidden_size" in message and "integers" in message


def test_a_config_without_optimizer_is_refused():
    config = zero2()
    del config["optimizer"]
    message = error_of(resolve, config)
    assert '"optimizer"' in message and "zero2.json" in message


def test_explicit_names_must_be_run_fields():
    message = error_of(resolve, zero2(), explicit={"learning_rate"})
    assert "learning_rate" in message and "'lr'" in message


# --- settings_from_config -----------------------------------------------------------------------


def test_settings_from_config_refuses_an_unresolved_config():
    message = error_of(settings_from_config, zero2(), make_run())
    assert "train_batch_size" in message and "resolve_ds_config" in message


def test_settings_from_config_reads_concrete_values_back():
    config = zero2()
    config["gradient_accumulation_steps"] = 4
    config["gradient_clipping"] = 0.0
    config["scheduler"]["params"]["warmup_num_steps"] = 100
    settings = settings_from_config(resolve(config), make_run())
    assert settings.grad_accum == 4
    assert settings.max_grad_norm == 0.0
    assert settings.warmup_ratio == pytest.approx(0.1)
    assert settings.output_dir == "/runs/llava" and settings.hidden_size == 4096


def test_settings_from_config_keeps_the_run_ratio_when_it_made_the_steps():
    resolved = resolve(zero2(), max_steps=10)  # ceil(0.3) = 1 step; the ratio stays 0.03
    assert settings_from_config(resolved, make_run(max_steps=10)).warmup_ratio == 0.03
