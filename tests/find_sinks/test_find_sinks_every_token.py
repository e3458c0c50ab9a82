"""find_sink_dims picks LLM dims on every token: a massive dim that shows only at the first token.

Sun et al. ("Massive Activations in LLMs") find an LLM's massive activations first at the sequence's
first token (and at delimiters), and only then, in some models, on visual tokens. Here the tiny demo
LLaVA gets one more planted circuit that fires at the BOS token only: BOS's embedding carries a
marker channel (MARKER) no other token has, and one MLP neuron of LLM layer 1 reads it and writes a
big value into an unused channel (BOS_DIM). The dim is massive from layer 2 on at the first token
and nowhere near it on visual tokens, so looking for LLM dims on visual tokens alone (as before the
rework) lists it as a candidate only; on every token it is chosen, and the profile and summary say
where it shows. Its strength varies (WEAK: less than the planted L-sink dims 93 / 17, STRONG: more),
and with either the L-sink threshold is still set on 93 (the dim largest on visual tokens), so the
L-sinks stay in the profile.
Run:
    python -m pytest tests/find_sinks/test_find_sinks_every_token.py -q
"""

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from sinktrain.backbones.registry import PROFILE_FILE
from sinktrain.demo import demo_data_pattern, ensure_demo_model
from sinktrain.demo import llava as demo
from sinktrain.find_sinks.analyse import Settings, analyse
from sinktrain.find_sinks.capture import VSinkFlag, read_index
from sinktrain.find_sinks.collect import collect
from sinktrain.find_sinks.images import PromptEncoder, shard_items
from sinktrain.find_sinks.probe import load_unprofiled
from sinktrain.find_sinks.profile import Identity, build_profile
from sinktrain.find_sinks.report import summary_table
from sinktrain.find_sinks.select import Rule

IMAGES = 32
MARKER, BOS_DIM, NEURON = 60, 50, 1  # unused by the demo's circuits (markers 5, 7, 9; sinks 37, 93, 17; neuron 0)
WEAK, STRONG = 1.0, 20.0  # down_proj gain: BOS_DIM peaks ~80 (93 / 17 reach ~500) or ~1600


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Torch on one thread (see conftest.one_thread)."""


def plant_bos_dim(model, bos_id: int, gain: float) -> None:
    """BOS alone carries MARKER (the projector writes none either); LLM layer 1's neuron NEURON
    reads it (silu(g) * g, g = the normed marker) and writes ``gain`` x that into BOS_DIM."""
    language_model = model.model.language_model
    projector = model.model.multi_modal_projector.linear_2
    mlp = language_model.layers[1].mlp
    with torch.no_grad():
        language_model.embed_tokens.weight[:, MARKER] = 0.0
        language_model.embed_tokens.weight[bos_id, MARKER] = 1.0
        projector.weight[MARKER] = 0.0
        projector.bias[MARKER] = 0.0
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight[NEURON] = 0.0
            proj.weight[NEURON, MARKER] = 1.0
        mlp.down_proj.weight[:, NEURON] = 0.0
        mlp.down_proj.weight[BOS_DIM, NEURON] = gain


@pytest.fixture(scope="module", params=[WEAK, STRONG], ids=["weak", "strong"])
def found(request, tmp_path_factory):
    """The find_sink_dims machinery (collect, analyse, build_profile, summary) on the demo LLaVA
    with the BOS circuit planted; returns the statistics, findings, profile and summary text."""
    target = tmp_path_factory.mktemp("bos") / "model"
    shutil.copytree(ensure_demo_model("llava"), target)
    (target / PROFILE_FILE).unlink()
    model = LlavaForConditionalGeneration.from_pretrained(target)
    bos_id = AutoTokenizer.from_pretrained(target).bos_token_id
    plant_bos_dim(model, bos_id, request.param)
    model.save_pretrained(target)

    backbone = load_unprofiled(str(target))
    rule = Rule()
    settings = Settings(rule, read_index(backbone.sink_profile.vit_layer, len(backbone.vision_layers())))
    items = shard_items(demo_data_pattern(), IMAGES, rank=0, world_size=1)
    stats = collect(backbone, items, VSinkFlag(rule.min_ratio), 8, backbone.default_template, "cpu").to_cpu()
    findings = analyse(stats, settings)
    identity = Identity(backbone.vision_tower_id(backbone.model.config), -2, backbone.vision_width, backbone.llm_width)
    profile, notes = build_profile(findings, settings, identity, "bos")
    input_ids, _, _ = PromptEncoder(backbone, backbone.default_template)(list(shard_items(demo_data_pattern(), 4, 0, 1)))
    first_tokens = set(input_ids[:, 0].tolist())
    return {"stats": stats, "findings": findings, "profile": profile, "notes": notes, "summary": summary_table(profile),
            "settings": settings, "bos_id": bos_id, "first_tokens": first_tokens, "gain": request.param}


def test_prompts_start_with_bos(found):
    assert found["first_tokens"] == {found["bos_id"]}  # the planted circuit fires at the first token


def test_the_first_token_dim_is_chosen(found):
    profile, findings = found["profile"], found["findings"]
    assert BOS_DIM in findings.llm.dims and set(findings.llm.dims) == {BOS_DIM, *demo.LLM_SINK_DIMS}
    assert set(profile.llm_dims) == {BOS_DIM, *demo.LLM_SINK_DIMS} and profile.stats["llm"]["dims_chosen_on"] == "every token"
    channel = findings.llm.channel(BOS_DIM)
    assert channel.verdict == "sink" and channel.first_layer == 2 and channel.image_fraction == 1.0  # written by layer 1's MLP
    # On visual tokens alone (where L-sinks are counted, and LLM dims were looked for before) it is
    # not even massive: its peak there stays below min_ratio x the layer's median magnitude.
    peaks = found["stats"].llm.peak.numpy()  # (layers, channels), visual non-V-sink tokens
    medians = np.array(findings.llm.medians)
    assert (peaks[:, BOS_DIM] / medians).max() < found["settings"].rule.min_ratio
    for dim in demo.LLM_SINK_DIMS:
        assert (peaks[:, dim] / medians).max() >= 100 * found["settings"].rule.min_ratio


def test_where_it_shows_first_token_not_visual(found):
    where = found["profile"].stats["llm"]["where"][str(BOS_DIM)]
    assert set(where) == {"first token", "delimiters", "visual", "other text"}
    first, visual = where["first token"], where["visual"]
    assert first["x_median"] >= 1000 and first["layer"] >= 2  # peak / the layer's median magnitude
    assert visual["x_median"] < 100 and visual["peak"] < first["peak"] / 100
    assert where["delimiters"]["x_median"] < first["x_median"] / 10
    for dim in demo.LLM_SINK_DIMS:  # the planted L-sink dims show on visual tokens, far less at the first token
        planted = found["profile"].stats["llm"]["where"][str(dim)]
        assert planted["visual"]["x_median"] >= 1000 and planted["first token"]["x_median"] < 100


def test_summary_names_where_it_shows(found):
    line = next(line for line in found["summary"].splitlines() if line.startswith(f"LLM dim {BOS_DIM} "))
    shows = line.split("shows at: ")[1].split(";")[0]
    assert "first token" in shows and "visual" not in shows
    assert "peak / layer median: first token" in line and "visual" in line.split(";")[1]
    for dim in demo.LLM_SINK_DIMS:
        planted = next(line for line in found["summary"].splitlines() if line.startswith(f"LLM dim {dim} "))
        assert "visual" in planted.split("shows at: ")[1].split(";")[0]


def test_l_sinks_stay_thresholded_on_the_visual_dim(found):
    """Weak or strong, the first-token dim does not take the L-sink threshold over: tau_L is set
    on the chosen dim largest on visual tokens (listed first) and classifies as without it."""
    profile, findings = found["profile"], found["findings"]
    assert profile.llm_dims[0] in demo.LLM_SINK_DIMS and profile.tau_l is not None and not found["notes"]
    if found["gain"] == STRONG:  # the largest on every token, yet not the primary dim
        assert findings.llm.channel(BOS_DIM).ratio > max(findings.llm.channel(d).ratio for d in demo.LLM_SINK_DIMS)
    llm = profile.stats["llm"]
    assert llm["gap"]["lower"] < profile.tau_l < llm["gap"]["upper"]
    assert llm["first_layer"] == demo.L_SINK_LAYER + 1
    assert llm["l_sinks_per_layer"][:2] == [0.0, 0.0] and min(llm["l_sinks_per_layer"][2:]) >= 1.0
