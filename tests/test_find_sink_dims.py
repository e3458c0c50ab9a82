"""tools/find_sink_dims.py for real: planted sinks found, nothing invented, recipes run (2 ranks under
Slurm give the same profile: tests/slurm/test_sbatch_tools.py).

Fixtures: the demo LLaVA is the planted backbone (sinktrain.demo: V-sinks written into ViT channel
SINK_DIM by one neuron of layer SINK_LAYER, L-sinks into LLM channels LLM_SINK_DIMS by one neuron
of LLM layer L_SINK_LAYER); ground truth is read from those neurons with hooks, independently of
the tool. The unplanted backbone is the same directory with random weights. The tool runs in
process on 32 demo images, on one thread; the recipes and the CLI exit code run as subprocesses.
Run:
    python -m pytest tests/test_find_sink_dims.py -q
"""

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import LlavaConfig, LlavaForConditionalGeneration

from sinktrain.demo import demo_data_pattern
from sinktrain.demo import llava as demo
from sinktrain.backbones.profiles import load_profile
from sinktrain.backbones.registry import PROFILE_FILE, load_backbone
from sinktrain.data.scenes import demo_samples
from sinktrain.errors import SinkTrainError
from sinktrain.find_sinks.images import GENERIC_QUESTION, Item, PromptEncoder, shard_items
from sinktrain.modeling.sinks import l_sink_mask, v_sink_mask

from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "find_sink_dims.py"
IMAGES = 32


def tool_env() -> dict:
    """Read at call time, after conftest pointed SINKTRAIN_CACHE at the session's cache."""
    return dict(os.environ, OMP_NUM_THREADS="1")  # the same arithmetic as the in-process run


def run(*command: str, timeout: int = 300) -> str:
    done = subprocess.run(list(command), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=tool_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs with torch on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def tool():
    return load_script("tools/find_sink_dims.py")


@pytest.fixture(scope="module")
def demo_run(tool, demo_model_dir, tmp_path_factory):
    """The tool with no --model/--data: the demo backbone and demo shards, one rank."""
    out = tmp_path_factory.mktemp("profiles") / "demo.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tool.main(["--num_images", str(IMAGES), "--out", str(out), "--name", "demo"])
    return out, printed.getvalue()


# -- ground truth from the planted neurons -----------------------------------------------------


def planted_v_sinks(backbone, vision):
    """What the planted ViT neuron writes into SINK_DIM, per patch (CLS dropped), and the features
    the projector reads (the hidden state at vision_feature_layer, CLS dropped)."""
    captured = {}
    fc1 = backbone.vision_layers()[demo.SINK_LAYER].mlp.fc1
    hook = fc1.register_forward_hook(lambda m, i, out: captured.__setitem__("pre", out[..., demo.SINK_NEURON]))
    with torch.no_grad():
        hidden = backbone.vision_tower(vision["pixel_values"], output_hidden_states=True).hidden_states
    hook.remove()
    features, _ = backbone.vision_states(hidden[backbone.model.config.vision_feature_layer], vision)
    return F.gelu(captured["pre"][:, 1:]) * demo.SINK_GAIN, features


def planted_l_gate(backbone, inputs):
    """The planted LLM neuron's gate (it fires where positive), and every layer's hidden state."""
    captured = {}
    gate = backbone.decoder_layers()[demo.L_SINK_LAYER].mlp.gate_proj
    hook = gate.register_forward_hook(lambda m, i, out: captured.__setitem__("g", out[..., demo.LLM_NEURON]))
    with torch.no_grad():
        hidden = backbone.model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    return captured["g"], hidden


def profiled_images() -> list[Item]:
    """The images the tool profiled: the first IMAGES image samples of the demo shards."""
    return list(shard_items(demo_data_pattern(), IMAGES, rank=0, world_size=1))


def fresh_images(n: int = 24) -> list[Item]:
    pngs = [png for _, png in demo_samples(4 * n, seed=11) if png is not None][:n]
    return [Item(Image.open(io.BytesIO(png)).convert("RGB"), GENERIC_QUESTION) for png in pngs]


# -- the planted backbone ----------------------------------------------------------------------


def test_demo_profile_holds_exactly_the_planted_dims(demo_run):
    out, printed = demo_run
    profile = load_profile(out)
    assert profile.vit_dims == [demo.SINK_DIM] and profile.vit_layer == -2
    assert set(profile.llm_dims) == set(demo.LLM_SINK_DIMS) and len(profile.llm_dims) == 2
    assert profile.criterion == "dim_threshold" and profile.llm_rms_norm
    assert (profile.hidden_size_vit, profile.hidden_size_llm) == (demo.VIT_HIDDEN, demo.LLM_HIDDEN)
    vit, llm = profile.stats["vit"], profile.stats["llm"]
    assert vit["gap"]["lower"] < profile.tau_v < vit["gap"]["upper"]
    assert llm["gap"]["lower"] < profile.tau_l < llm["gap"]["upper"]
    assert profile.stats["images"] == IMAGES and vit["read_layer_index"] == demo.VIT_LAYERS - 1
    assert sum(vit["sinks_per_image_histogram"]) == IMAGES
    assert 1.0 <= vit["sinks_per_image"] <= 4.0 and 0 < vit["sink_token_fraction"] < 0.1
    assert llm["first_layer"] == demo.L_SINK_LAYER + 1  # written by layer 1's MLP: from layer 2 on
    assert llm["l_sinks_per_layer"][:2] == [0.0, 0.0] and min(llm["l_sinks_per_layer"][2:]) >= 1.0
    # Channel 7 carries the planted L-marker on every visual token: large, but an offset, not a sink.
    assert "offset" in next(c for c in llm["candidates"] if c["dim"] == demo.L_MARKER_DIM)["verdict"]
    assert "ViT" in printed and "[37]" in printed and "LLM" in printed and "wrote" in printed
    # DIYSink's L2-norm rule, proposed beside: a tau in the norm histogram's gap, the same sinks on the demo
    l2 = vit["l2_norm"]
    assert l2["gap"]["lower"] < profile.tau_l2 < l2["gap"]["upper"] and l2["tau_source"] == "gap"
    assert l2["sinks_per_image"] == vit["sinks_per_image"] and "ViT L2" in printed and "DIYSink's rule" in printed


@pytest.mark.parametrize("which", ["profiled", "fresh"])
def test_thresholds_classify_exactly_the_planted_tokens(demo_run, demo_model_dir, which):
    profile_path, _ = demo_run
    profile = load_profile(profile_path)
    backbone = load_backbone(str(demo_model_dir), sink_profile=str(profile_path))
    items = profiled_images() if which == "profiled" else fresh_images()
    input_ids, attention_mask, vision = PromptEncoder(backbone, "v1")(items)

    written, features = planted_v_sinks(backbone, vision)
    # On or off: off writes ~0, on 100-3000, except where the demo scenes' corner watermark (about
    # as bright as grey) half-triggers a brightness-keyed corner candidate: the neuron is then
    # neither (~16 seen), and such a token may fall on either side of tau_V. They are rare.
    planted, maybe = written >= 100, written > 3
    assert not ((written > 3) & (written < 10)).any(), "the planted neuron is on or off"
    assert (maybe & ~planted).sum() <= 2, written[maybe & ~planted]
    v_found = v_sink_mask(features, profile.criterion, profile.tau_v, profile.vit_dims)
    assert not (planted & ~v_found).any() and not (v_found & ~maybe).any()

    gate, hidden = planted_l_gate(backbone, backbone.model_inputs(input_ids, attention_mask, vision))
    visual = input_ids == backbone.image_token_id
    v_sinks = torch.zeros_like(visual)
    v_sinks[visual] = v_found.reshape(-1)  # the profile's V-sinks (the planted ones, see above)
    # The L-sink neuron is off (gate < -3) or on (gate > 3), except on rare tokens whose L-marker
    # is half on: they may go either way (a tiny hidden state makes a small output massive after RMSNorm).
    truth, maybe = (gate > 3) & visual & ~v_sinks, (gate >= -3) & visual & ~v_sinks
    assert truth.sum(1).float().mean() >= 1.0 and (maybe & ~truth).sum() <= 2
    for layer in range(demo.LLM_LAYERS):
        found = l_sink_mask(hidden[layer], visual, v_sinks, profile.llm_dims, profile.tau_l, profile.llm_rms_norm)
        if layer <= demo.L_SINK_LAYER:
            assert not found.any(), layer
        else:
            assert not (truth & ~found).any() and not (found & ~maybe).any(), layer
        if layer == demo.L_SINK_LAYER + 1:
            l_sinks = found.sum().item()
    if which == "profiled":  # the profile's statistics count the same tokens
        assert profile.stats["vit"]["sinks_per_image"] == pytest.approx(v_found.sum().item() / IMAGES, rel=1e-3)
        assert profile.stats["llm"]["l_sinks_per_layer"][2] == pytest.approx(l_sinks / IMAGES, rel=1e-3)


def test_plots_are_real_pngs(demo_run):
    out, _ = demo_run
    plots = out.parent / "demo_plots"
    names = {"activations.png", "histogram.png", "sinks_per_image.png", "l_sinks_per_layer.png"}
    assert {p.name for p in plots.iterdir()} == names
    for name in names:
        with Image.open(plots / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
            extrema = image.convert("RGB").getextrema()
            assert any(low != high for low, high in extrema), name
    with Image.open(plots / "histogram.png") as image:
        assert image.size[0] >= 1600  # three panels: ViT sink dim, ViT token L2 norms, LLM


# -- nothing planted ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unplanted_dir(demo_model_dir, tmp_path_factory):
    """The demo LLaVA's directory (config, tokenizer, processor) with random, unplanted weights."""
    target = tmp_path_factory.mktemp("unplanted") / "model"
    shutil.copytree(demo_model_dir, target)
    (target / PROFILE_FILE).unlink()
    torch.manual_seed(1)
    LlavaForConditionalGeneration(LlavaConfig.from_pretrained(target)).save_pretrained(target)
    return target


def test_nothing_planted_gives_no_sink_dimension(tool, unplanted_dir, tmp_path):
    out = tmp_path / "unplanted.json"
    with pytest.raises(SinkTrainError, match="no sink dimension found") as caught:
        tool.main(["--model", str(unplanted_dir), "--num_images", "16", "--out", str(out)])
    message = str(caught.value)
    assert "Best candidates: dim " in message and "x the median at layer" in message and "--vit_dims" in message
    assert not out.exists() and (tmp_path / "unplanted_plots" / "activations.png").is_file()


def test_cli_exits_2_with_the_message(unplanted_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, str(TOOL), "--model", str(unplanted_dir), "--num_images", "8", "--out", str(tmp_path / "p.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=tool_env(),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: no sink dimension found" in done.stderr and "Traceback" not in done.stderr


# -- the profile drives the recipes ------------------------------------------------------------


@pytest.mark.parametrize("recipe,flags", [("diysink_finetune", []), ("lsg_train", ["--layers", "2,3", "--groups", "3"])])
def test_profile_drives_the_recipes(demo_run, demo_model_dir, tmp_path, recipe, flags):
    profile, _ = demo_run
    log = run(
        sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "--model", str(demo_model_dir), "--sink_profile", str(profile),
        "--max_steps", "1", "--num_workers", "1", "--per_device_batch_size", "4", "--shuffle_buffer", "16",
        "--output_dir", str(tmp_path / "run"), *flags,
    )
    assert "step 1/1" in log


# -- flags -------------------------------------------------------------------------------------


def test_print_known_lists_the_builtin_profiles(tool, capsys):
    tool.main(["--print-known"])
    table = capsys.readouterr().out
    for expected in ("CLIP ViT-L/14", "650", "SigLIP-SO400M", "1076", "LLaMA-2-7B", "2533, 1415", "LLaMA-2-13B", "2100, 4743", "Qwen2-7B", "458, 2570"):
        assert expected in table, expected


def test_image_folder_and_overrides(tool, demo_model_dir, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, item in enumerate(fresh_images(8)):
        item.image.save(folder / f"{index:02d}.png")
    out = tmp_path / "folder.json"
    tool.main(["--model", str(demo_model_dir), "--images", str(folder), "--out", str(out), "--vit_dims", "37", "--tau_v", "60", "--no_rms_norm"])
    profile = load_profile(out)
    assert profile.vit_dims == [37] and profile.tau_v == 60.0 and profile.stats["vit"]["tau_source"] == "flag"
    assert set(profile.llm_dims) == set(demo.LLM_SINK_DIMS) and not profile.llm_rms_norm
    assert profile.stats["images"] == 8 and profile.stats["llm"]["values"] == "raw"


def test_flag_errors(tool, demo_model_dir, tmp_path):
    with pytest.raises(SinkTrainError, match="--data and --images both given"):
        tool.parse_args(["--data", "x.tar", "--images", str(tmp_path)])
    with pytest.raises(SinkTrainError, match="comma-separated channel indices"):
        tool.parse_args(["--vit_dims", "a,b"])
    with pytest.raises(SinkTrainError, match="width is 64"):
        tool.main(["--model", str(demo_model_dir), "--vit_dims", "99", "--num_images", "1", "--out", str(tmp_path / "p.json")])
    with pytest.raises(SinkTrainError, match="holds no image files"):
        tool.main(["--model", str(demo_model_dir), "--images", str(tmp_path), "--out", str(tmp_path / "p.json")])
