"""tools/convert_to_hf.py on real 2-rank ZeRO-3 runs (tests/conftest.py's session runs of both
recipes on the demo LLaVA), offline on CPU without a process group; every export is loaded in a
fresh process that cannot import sinktrain (fresh_load.py) and must compute the training-time
model's logits and generate() tokens. Also: --step, sharding, LSG's --export_model (the same
exporter) and --full, the upload to a local Hub stand-in and loading back by repo id, and bad
input. Every family's export in process: test_export_families.py.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
from hub_server import HubStandIn, client_env

from sinktrain.errors import SinkTrainError
from sinktrain.lsg.gate_file import read_gates

from export_checks import expected_outputs, trained_backbone
from fresh_load import assert_same, load_exports
from recipe_checks import copy_run
from scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "convert_to_hf.py"
pytestmark = pytest.mark.multiprocess


def convert(*flags) -> None:
    """The tool in this process (its main; the Hub and kill tests run it as a command)."""
    load_script("tools/convert_to_hf.py").main([str(flag) for flag in flags])


def convert_command(*flags, env=None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(TOOL), *map(str, flags)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_diysink_runs_convert_and_load_without_sinktrain(diysink_demo_run, tmp_path):
    run_dir, _ = diysink_demo_run
    convert(run_dir, "--out", tmp_path / "latest")
    convert(run_dir, "--step", 75, "--out", tmp_path / "step75", "--max_shard_size", "1MB", "--license", "mit")
    index = json.loads((tmp_path / "step75" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and (tmp_path / "latest" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "latest" / "config.json").read_text())
    assert config["model_type"] == "sinktrain_llava" and config["auto_map"]["AutoModelForImageTextToText"].startswith("modeling_sinktrain.")
    assert json.loads((tmp_path / "step75" / "training_run.json").read_text())["step"] == 75
    assert "license: mit" in (tmp_path / "step75" / "README.md").read_text()
    jobs, expected = [], []
    for name, step in (("latest", 100), ("step75", 75)):
        expected.append(expected_outputs(trained_backbone(run_dir, step), tmp_path / f"{name}.inputs.pt"))
        jobs.append({"kind": "remote", "dir": str(tmp_path / name), "inputs": str(tmp_path / f"{name}.inputs.pt")})
    loaded = load_exports(jobs, tmp_path)
    for exported, outputs in zip(loaded, expected):
        assert_same(exported, outputs)
    assert not torch.allclose(expected[0]["logits"], expected[1]["logits"])  # --step chose another checkpoint


def test_lsg_export_model_and_full_conversion(lsg_demo_run, tmp_path):
    """--export_model wrote the gates adapter (the final gates); --full --step 30 the whole model."""
    run_dir, _ = lsg_demo_run
    adapter = run_dir / "hf"
    final_gates, _ = read_gates(run_dir / "gates")
    exported_gates, meta = read_gates(adapter)  # sinktrain's gate files: tools/evaluate.py --gates reads it
    assert all(torch.equal(exported_gates[key], value) for key, value in final_gates.items()) and meta.layers == [1, 2, 3]
    assert not (adapter / "config.json").exists() and "base_model_relation: adapter" in (adapter / "README.md").read_text()
    convert(run_dir, "--step", 30, "--full", "--out", tmp_path / "full30")
    jobs, expected = [], []
    for name, step, gates, kind in (("adapter", 40, run_dir / "gates", "adapter"), ("full30", 30, None, "remote")):
        expected.append(expected_outputs(trained_backbone(run_dir, step, gates), tmp_path / f"{name}.inputs.pt"))
        directory = adapter if kind == "adapter" else tmp_path / name
        jobs.append({"kind": kind, "dir": str(directory), "inputs": str(tmp_path / f"{name}.inputs.pt")})
    for exported, outputs in zip(load_exports(jobs, tmp_path), expected):
        assert_same(exported, outputs)


def test_push_to_hub_then_load_by_repo_id(diysink_demo_run, tmp_path):
    """The real huggingface_hub client against a local stand-in (HF_ENDPOINT): create_repo +
    upload_folder with the commit message naming the run, then from_pretrained("alice/...") in a
    fresh process downloads it and computes what the run's model computes. The token is never printed."""
    run_dir, _ = diysink_demo_run
    with HubStandIn() as hub:
        env = client_env(hub, tmp_path / "home", hub.token, xet=False)  # the LFS route (Xet: tests/export/test_hub.py)
        done = convert_command(run_dir, "--out", tmp_path / "export", "--push_to_hub", "alice/diysink-demo", "--private", env=env)
        assert hub.token not in done.stdout + done.stderr
        repo = hub.repos["alice/diysink-demo"]
        assert repo.private and {"config.json", "README.md", "modeling_sinktrain.py", "model.safetensors"} <= set(repo.files())
        outputs = expected_outputs(trained_backbone(run_dir, 100), tmp_path / "inputs.pt")
        online = {key: value for key, value in env.items() if key.startswith("HF_")} | {"HF_HUB_OFFLINE": "0"}
        (exported,) = load_exports([{"kind": "remote", "dir": "alice/diysink-demo", "inputs": str(tmp_path / "inputs.pt")}], tmp_path, online)
    assert_same(exported, outputs)


def test_push_without_a_token_fails_before_converting(diysink_demo_run, tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no `hf auth login` either
    with pytest.raises(SinkTrainError, match="needs a Hugging Face token"):
        convert(diysink_demo_run[0], "--out", tmp_path / "x", "--push_to_hub", "alice/m")
    assert not (tmp_path / "x").exists()


def test_bad_input_is_refused_clearly(diysink_demo_run, tmp_path):
    tool = load_script("tools/convert_to_hf.py")
    run_dir, _ = diysink_demo_run
    (tmp_path / "taken").mkdir()
    cases = [
        ([str(run_dir), "--out", str(tmp_path / "a"), "--step", "7"], "has checkpoints at steps [75, 100]"),
        ([str(run_dir), "--out", str(tmp_path / "taken")], "already exists; pass --overwrite"),
        ([str(tmp_path), "--out", str(tmp_path / "b")], "no run_config.json"),
        ([str(run_dir), "--out", str(tmp_path / "c"), "--push_to_hub", "not-a-repo-id"], "USER/REPO"),
    ]
    for argv, message in cases:
        with pytest.raises(SinkTrainError, match=message.replace("[", r"\[").replace("]", r"\]")):
            tool.main(argv)
    empty = copy_run(run_dir, tmp_path / "empty")
    shutil.rmtree(empty / "checkpoints")
    with pytest.raises(SinkTrainError, match="holds no checkpoint"):
        tool.main([str(empty), "--out", str(tmp_path / "d")])
    newer = copy_run(run_dir, tmp_path / "newer")
    record = json.loads((newer / "run_config.json").read_text())
    (newer / "run_config.json").write_text(json.dumps({**record, "format": 99}))
    with pytest.raises(SinkTrainError, match="format 99"):
        tool.main([str(newer), "--out", str(tmp_path / "e")])


def test_unknown_checkpoint_formats_and_damage_leave_no_export(diysink_demo_run, tmp_path):
    tool = load_script("tools/convert_to_hf.py")
    run = copy_run(diysink_demo_run[0], tmp_path / "run")
    states = run / "checkpoints" / "step_000100" / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    header = torch.load(states, weights_only=False)
    torch.save({**header, "ds_version": "99.1.0"}, states)
    with pytest.raises(SinkTrainError, match="newer than the installed"):
        tool.main([str(run), "--out", str(tmp_path / "out")])
    torch.save({**header, "ds_version": "0.9.0"}, states)
    with pytest.raises(SinkTrainError, match="DeepSpeed >= 0.16"):
        tool.main([str(run), "--out", str(tmp_path / "out")])
    torch.save(header, states)
    next((run / "checkpoints" / "step_000100").glob("*rank_1*optim_states.pt")).unlink()  # a lost rank file
    with pytest.raises(SinkTrainError, match="incomplete or damaged"):
        tool.main([str(run), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_a_killed_export_leaves_nothing_that_looks_complete(diysink_demo_run, tmp_path):
    out = tmp_path / "export"
    process = subprocess.Popen([sys.executable, str(TOOL), str(diysink_demo_run[0]), "--out", str(out)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".export.partial-*")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".export.partial-*")) and not out.exists()
    convert(diysink_demo_run[0], "--out", out)  # the next export of that name cleans up and completes
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".export.partial-*"))
