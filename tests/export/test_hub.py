"""sinktrain.export.hub against a local Hub stand-in (tests/hub_server.py), with the real
huggingface_hub client: push a small model folder, download it back, compare every byte.

The client runs in a fresh process: huggingface_hub reads HF_ENDPOINT (and HF_HUB_DISABLE_XET) when
it is imported, and this test process has imported it already, offline (tests/conftest.py).
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubStandIn, client_env

from sinktrain.errors import SinkTrainError
from sinktrain.export.hub import push_folder

ROOT = Path(__file__).resolve().parents[2]

# argv: ACTION REPO_ID [FOLDER]; ACTION is push | push-private (then download) | download.
# Prints one JSON line; a SinkTrainError goes to stderr with exit status 3.
CLIENT = """
import json, sys
from pathlib import Path
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.utils._runtime import is_xet_available
from sinktrain.errors import SinkTrainError
from sinktrain.export.hub import push_folder, require_token

action, repo_id = sys.argv[1], sys.argv[2]
result = {"xet": is_xet_available()}
try:
    if action.startswith("push"):
        require_token()
        result["commit_url"] = push_folder(
            Path(sys.argv[3]), repo_id, private=action == "push-private", commit_message="sinktrain test upload")
except SinkTrainError as error:
    sys.exit(print(error, file=sys.stderr) or 3)
result["snapshot"] = snapshot_download(repo_id)
try:
    hf_hub_download(repo_id, "model.safetensors")  # what from_pretrained probes before the index
except EntryNotFoundError:
    result["missing_file_is_entry_not_found"] = True
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def hub():
    with HubStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """What an export holds, small: a card with YAML front matter, json, a nested file, and a
    1.5 MB binary (LFS when the stand-in answers "lfs": binary sample)."""
    folder = tmp_path_factory.mktemp("export")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags:\n- sinktrain\n---\n\n# tiny export\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "diysink_llava", "hidden_size": 8}))
    (folder / "nested").mkdir()
    (folder / "nested" / "notes.txt").write_text("sink dims: 1415, 2533\n")
    (folder / "weights.safetensors").write_bytes(b"\0" + random.Random(0).randbytes(1_500_000))
    return folder


def files_in(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def run_client(hub: HubStandIn, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", CLIENT, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    console = done.stdout + done.stderr
    assert hub.token not in console and env.get("HF_TOKEN", hub.token) not in console  # (e): never printed
    return done


def push_and_fetch(hub, tmp_path, folder, repo_id, *, xet, action="push") -> dict:
    done = run_client(hub, client_env(hub, tmp_path, hub.token, xet), action, repo_id, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["commit_url"].startswith(f"{hub.url}/{repo_id}/commit/")
    assert result["missing_file_is_entry_not_found"]
    assert files_in(Path(result["snapshot"])) == files_in(folder)
    assert hub.repos[repo_id].files() == files_in(folder)
    return result


def test_push_without_xet_uses_lfs(hub, model_folder, tmp_path):
    hub.upload_mode = "lfs"
    result = push_and_fetch(hub, tmp_path, model_folder, "alice/lfs-export", xet=False)
    assert not result["xet"]
    stored = hub.repos["alice/lfs-export"].blobs()
    assert stored["weights.safetensors"].lfs and not stored["config.json"].lfs
    assert "POST /alice/lfs-export.git/info/lfs/objects/batch" in hub.requests
    assert f"PUT /lfs-upload/{stored['weights.safetensors'].etag()}" in hub.requests


def test_push_with_xet_enabled_and_regular_uploads(hub, model_folder, tmp_path):
    """The client as users have it (hf-xet installed): the stand-in answers "regular" for every
    file, so everything travels in the commit and Xet is never asked."""
    hub.upload_mode = "regular"
    result = push_and_fetch(hub, tmp_path, model_folder, "alice/regular-export", xet=True)
    assert result["xet"]
    assert not any(blob.lfs for blob in hub.repos["alice/regular-export"].blobs().values())
    assert not any("lfs" in line or "xet" in line for line in hub.requests if "regular-export" in line)


def test_private_repo_needs_the_token(hub, model_folder, tmp_path):
    hub.upload_mode = "lfs"
    push_and_fetch(hub, tmp_path / "owner", model_folder, "alice/private-export", xet=False, action="push-private")
    assert hub.repos["alice/private-export"].private
    done = run_client(hub, client_env(hub, tmp_path / "stranger", token=None), "download", "alice/private-export")
    assert done.returncode != 0 and "RepositoryNotFoundError" in done.stderr, done.stderr[-3000:]


def test_missing_token_fails_before_any_request(hub, model_folder, tmp_path):
    before = len(hub.requests)
    done = run_client(hub, client_env(hub, tmp_path, token=None), "push", "alice/no-token", model_folder)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "needs a Hugging Face token" in done.stderr and "hf auth login" in done.stderr
    assert "nothing was uploaded" in done.stderr
    assert "alice/no-token" not in hub.repos and len(hub.requests) == before


def test_rejected_token_is_explained_and_not_printed(hub, model_folder, tmp_path):
    wrong = "hf_wrong_" + "x" * 20
    done = run_client(hub, client_env(hub, tmp_path, token=wrong), "push", "alice/bad-token", model_folder)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "creating Hub repo alice/bad-token failed" in done.stderr and "401" in done.stderr
    assert "hf auth login" in done.stderr and "Traceback" not in done.stderr
    assert "alice/bad-token" not in hub.repos


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "alice/bad..name", "alice/"])
def test_bad_repo_id_names_the_fix(repo_id, tmp_path):
    with pytest.raises(SinkTrainError, match="use USER/REPO"):
        push_folder(tmp_path, repo_id, private=False, commit_message="never sent")
