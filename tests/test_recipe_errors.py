"""Bad input to a recipe fails early, exits 2, and says what is wrong and how to fix it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from recipe_worker import RecipeWorker

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "diysink_finetune.py"


@pytest.fixture(scope="module", autouse=True)
def worker(tmp_path_factory):
    global WORKER, OUTPUT_DIRS
    WORKER, OUTPUT_DIRS = RecipeWorker(), tmp_path_factory.mktemp("refused-runs")
    yield
    WORKER.close()


def recipe(*flags):
    """The recipe's exit code and stderr; an output dir of its own where a test names none (not runs/ in the checkout)."""
    own = () if "--output_dir" in flags else ("--output_dir", str(OUTPUT_DIRS / f"run-{len(list(OUTPUT_DIRS.iterdir()))}"))
    return WORKER.run("recipes/diysink_finetune.py", *flags, *own)


def test_the_cli_itself_exits_2_with_the_message(tmp_path):
    """The worker runs the recipes' own main_guard; this checks it against a real command line."""
    done = subprocess.run([sys.executable, str(RECIPE), "--max_pixels", "50000", "--output_dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and "dynamic-resolution families" in done.stderr


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_unsupported_architecture_names_the_supported_ones(llama_dir):
    code, err = recipe("--model", str(llama_dir))
    assert code == 2 and "'llama'" in err and "llava (LlavaForConditionalGeneration)" in err
    assert "qwen2_vl (Qwen2VLForConditionalGeneration)" in err and "qwen2_5_vl (Qwen2_5_VLForConditionalGeneration)" in err


def test_template_of_another_family(tmp_path):
    code, err = recipe("--model", "demo:qwen2_vl", "--template", "v1", "--output_dir", str(tmp_path))
    assert code == 2 and "--template v1 is the chat format of LLaVA-1.5" in err and "speaks qwen2_vl" in err


def test_pixel_limits_on_a_fixed_size_family(tmp_path):
    code, err = recipe("--max_pixels", "50000", "--output_dir", str(tmp_path))
    assert code == 2 and "dynamic-resolution families" in err


def test_unknown_demo_family(tmp_path):
    code, err = recipe("--model", "demo:gpt4v", "--output_dir", str(tmp_path))
    assert code == 2 and "no demo model 'gpt4v'" in err and "qwen2_5_vl" in err


def test_model_path_that_is_no_model(tmp_path):
    code, err = recipe("--model", str(tmp_path / "nothing"))
    assert code == 2 and "cannot load a model config" in err


def test_data_matching_no_shard(tmp_path):
    code, err = recipe("--data", str(tmp_path / "{000000..000003}.tar"))
    assert code == 2 and "matches no shard" in err and "tools/make_shards.py" in err


def test_fewer_samples_than_data_lanes():
    code, err = recipe("--data_lanes", "5000")  # the demo has 2400 samples
    assert code == 2 and "2400 readable samples, fewer than the 5000 data lanes" in err and "--data_lanes" in err


def test_ds_config_that_does_not_parse(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"train_batch_size": "auto",,}')
    code, err = recipe("--ds_config", str(broken))
    assert code == 2 and "line 1" in err


def test_ds_config_contradicting_a_flag(tmp_path):
    config = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    config["optimizer"]["params"]["lr"] = 1e-4
    path = tmp_path / "fixed_lr.json"
    path.write_text(json.dumps(config))
    code, err = recipe("--ds_config", str(path), "--lr", "1e-3")
    assert code == 2 and "optimizer.params.lr" in err and "--lr" in err


def test_missing_sink_profile_file():
    code, err = recipe("--sink_profile", "no/such/profile.json")
    assert code == 2 and "tools/find_sink_dims.py" in err


def test_existing_checkpoints_are_not_overwritten(tmp_path):
    (tmp_path / "checkpoints" / "step_000010").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_000010" / "trainer_state.json").write_text('{"step": 10}')
    (tmp_path / "checkpoints" / "latest").write_text("step_000010")
    code, err = recipe("--output_dir", str(tmp_path))
    assert code == 2 and "--resume auto" in err and "nothing was overwritten" in err
