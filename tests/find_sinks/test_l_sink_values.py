"""L-sinks read raw or RMS-normalised, and the threshold artefact find_sink_dims warns about.

The same tau_L means different things raw and after weightless RMSNorm (VAR's rule), where no
channel exceeds sqrt(D): the built-in LLaVA-OneVision profile (LSG Table S7, tau_L 50 raw on
Qwen2-7B) finds planted raw L-sinks at width 3584, which the RMS reading misses. The artefact
model is a temporary copy of the demo LLaVA whose LLM layer ARTEFACT_LAYER - 1 adds ARTEFACT_VALUE
to the primary L-sink dim of every token (a down_proj bias), as residual norm growth does in the LSG
paper's L19+ artefact: a fixed raw tau_L then fires on every visual token from ARTEFACT_LAYER on.
The tool runs in process on 8 demo images.
Run:
    python -m pytest tests/find_sinks/test_l_sink_values.py -q
"""

import contextlib
import importlib.util
import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from matplotlib.colors import to_rgb
from transformers import LlavaConfig, LlavaForConditionalGeneration

from sinktrain.backbones.llava import LlavaBackbone
from sinktrain.backbones.profiles import load_profile, known_profile
from sinktrain.demo import llava as demo
from sinktrain.errors import SinkTrainError
from sinktrain.find_sinks.plots import ARTEFACT_COLOR
from sinktrain.modeling.sinks import l_sink_mask, rms_normalize

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "find_sink_dims.py"
IMAGES = 8
ARTEFACT_LAYER, ARTEFACT_VALUE = 3, 60.0  # LLM layer l is the input of decoder layer l
PAPER_TAU_L = "50"  # LSG Table S7, LLaVA-OV row: a raw magnitude
# V-sinks and the LLM dims given, so the run is about tau_L alone (8 images are few for gaps).
FIXED = ["--num_images", str(IMAGES), "--vit_dims", str(demo.SINK_DIM), "--tau_v", str(demo.TAU_V), "--llm_dims", "93,17"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs with torch on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("sinktrain_tool_find_sink_dims_values", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(tool, *argv: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the tool's log handler writes to sys.stdout
        tool.main(list(argv))
    return printed.getvalue()


# -- the rule: raw vs RMS-normalised at Qwen2-7B's width ----------------------------------------


def test_onevision_profile_finds_raw_l_sinks_that_rms_misses():
    profile = known_profile("siglip-so400m-14-384", "qwen2-7b")
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 12, profile.hidden_size_llm, generator=generator)  # ordinary channels ~1
    visual = torch.zeros(1, 12, dtype=torch.bool)
    visual[0, 2:10] = True
    v_sinks = torch.zeros_like(visual)
    v_sinks[0, 3] = True
    planted = [0, 3, 5, 7]  # a text token, a V-sink, and two L-sinks
    hidden[0, planted, 458] = 55.0
    hidden[0, planted, 2570] = 55.0
    found = l_sink_mask(hidden, visual, v_sinks, profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
    assert found[0].nonzero().flatten().tolist() == [5, 7]
    assert not l_sink_mask(hidden, visual, v_sinks, profile.llm_dims, profile.tau_l, rms_norm=True).any()
    # Two equally massive dims reach at most sqrt(3584 / 2) = 42.3 after RMSNorm, below tau_L 50.
    assert rms_normalize(hidden)[0, 5, 458] < math.sqrt(3584 / 2) < profile.tau_l


# -- find_sink_dims flags -----------------------------------------------------------------------


def test_l_sink_values_default_is_the_family_s(tool):
    args = tool.parse_args([])
    assert args.l_sink_values is None and tool.l_sink_values(args, LlavaBackbone) == LlavaBackbone.l_sink_values == "rms"
    assert tool.l_sink_values(tool.parse_args(["--l_sink_values", "raw"]), LlavaBackbone) == "raw"
    assert tool.parse_args(["--no_rms_norm"]).l_sink_values == "raw"  # the deprecated spelling
    with pytest.raises(SystemExit):
        tool.parse_args(["--l_sink_values", "normed"])


def test_tau_l_out_of_rms_reach_fails_before_the_pass(tool, demo_model_dir, tmp_path):
    """The demo LLM is 128 wide: nothing exceeds sqrt(128) = 11.3 after RMSNorm."""
    with pytest.raises(SinkTrainError, match=r"--tau_l: tau_l 12 on RMS-normalised values can never fire.*--l_sink_values raw"):
        tool.main(["--model", str(demo_model_dir), "--tau_l", "12", "--l_sink_values", "rms", "--out", str(tmp_path / "p.json")])
    assert not (tmp_path / "p.json").exists()


# -- the threshold artefact, end to end ---------------------------------------------------------


@pytest.fixture(scope="module")
def artefact_model(demo_model_dir, tmp_path_factory) -> Path:
    """A copy of the demo LLaVA (the shipped one is untouched) whose decoder layer
    ARTEFACT_LAYER - 1 adds ARTEFACT_VALUE to the primary L-sink dim of every token."""
    out = tmp_path_factory.mktemp("artefact") / "model"
    shutil.copytree(demo_model_dir, out)
    config = LlavaConfig.from_pretrained(demo_model_dir)
    config.text_config.mlp_bias = True  # LLaMA's MLP has no bias; every layer gets zero ones but this
    model = LlavaForConditionalGeneration.from_pretrained(demo_model_dir, config=config)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for proj in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                proj.bias.zero_()
        model.model.language_model.layers[ARTEFACT_LAYER - 1].mlp.down_proj.bias[demo.LLM_SINK_DIMS[0]] = ARTEFACT_VALUE
    model.save_pretrained(out)
    return out


def red_pixels(png: Path) -> int:
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    red = np.round(np.array(to_rgb(ARTEFACT_COLOR)) * 255)
    return int((np.abs(pixels - red).max(axis=1) <= 1).sum())


def test_threshold_artefact_is_warned_about_and_marked(tool, artefact_model, tmp_path):
    out = tmp_path / "artefact.json"
    printed = run_tool(tool, "--model", str(artefact_model), *FIXED, "--l_sink_values", "raw", "--tau_l", PAPER_TAU_L, "--out", str(out))
    profile = load_profile(out)
    llm = profile.stats["llm"]
    assert not profile.llm_rms_norm and llm["values"] == "raw"
    per_layer = llm["l_sinks_per_layer"]
    assert per_layer[ARTEFACT_LAYER] > 10 * per_layer[ARTEFACT_LAYER - 1] > 0, per_layer
    assert llm["threshold_artefact_layers"] == [ARTEFACT_LAYER]
    assert f"jump more than 10x over the previous layer at LLM layers [{ARTEFACT_LAYER}]" in printed
    assert "residual norm grows" in printed and "LLaVA-OneVision" in printed
    assert f"LLM layers [{ARTEFACT_LAYER}]: L-sinks per image jump > 10x" in printed  # the summary
    plot = out.parent / "artefact_plots" / "l_sinks_per_layer.png"
    assert plot.is_file() and red_pixels(plot) > 100


def test_no_artefact_where_l_sinks_only_emerge(tool, demo_model_dir, tmp_path):
    """The unmodified demo at the same raw tau_L: L-sinks from layer 2 on (none before) are no jump."""
    out = tmp_path / "plain.json"
    printed = run_tool(tool, "--model", str(demo_model_dir), *FIXED, "--l_sink_values", "raw", "--tau_l", PAPER_TAU_L, "--out", str(out))
    llm = load_profile(out).stats["llm"]
    assert llm["l_sinks_per_layer"][demo.L_SINK_LAYER + 1] > 0 and llm["threshold_artefact_layers"] == []
    assert "jump more than 10x" not in printed
    assert red_pixels(out.parent / "plain_plots" / "l_sinks_per_layer.png") == 0
