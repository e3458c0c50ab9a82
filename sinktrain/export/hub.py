"""Upload an exported model folder to the Hugging Face Hub (``convert_to_hf.py --push_to_hub``).

    from sinktrain.export.hub import push_folder, require_token
    require_token()                     # before converting: a missing token fails in a second
    ...                                 # write the folder
    url = push_folder(out_dir, "alice/diysink-llava", private=True, commit_message="DIYSink export")

The token is never an argument: huggingface_hub resolves it (HF_TOKEN, else the file `hf auth login`
wrote under $HF_HOME), so it stays out of shell history, ``ps`` and our logs. The endpoint is
huggingface_hub's (HF_ENDPOINT, read when huggingface_hub is imported). Every failure becomes a
SinkTrainError that says which step failed and what to do; none of them contains the token.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from sinktrain.errors import SinkTrainError

# A refused connection or a timeout surfaces as the HTTP client's own error, which HfHubHTTPError
# subclasses first (httpx2.HTTPError in huggingface_hub 2.4; the client changed across releases).
TRANSPORT_ERROR = HfHubHTTPError.__bases__[0]

LOGIN_HINT = "run `hf auth login` (or set HF_TOKEN) with a token that has write access"


def require_token() -> None:
    """Fail before any work when no Hugging Face token is configured."""
    if get_token() is None:
        raise SinkTrainError(
            f"--push_to_hub needs a Hugging Face token with write access: {LOGIN_HINT}; nothing was uploaded"
        )


def check_repo_id(repo_id: str) -> None:
    """``USER/REPO`` (or ``ORG/REPO``) as the Hub spells it. A bare ``REPO`` is refused although the
    Hub takes it: it would land in whichever account owns the token."""
    try:
        validate_repo_id(repo_id)
        valid = repo_id.count("/") == 1 and all(repo_id.split("/"))
    except HFValidationError:
        valid = False
    if not valid:
        raise SinkTrainError(
            f"--push_to_hub {repo_id!r} is not a Hub repo id: use USER/REPO (letters, digits, '-', '_', '.'), "
            "e.g. --push_to_hub alice/diysink-llava-7b"
        )


def push_folder(folder: Path, repo_id: str, private: bool, commit_message: str) -> str:
    """Create ``repo_id`` (a model repo; kept as it is if it exists) and upload ``folder`` as one
    commit. Returns the commit URL. ``private`` only applies when the repo is created."""
    check_repo_id(repo_id)
    api = HfApi()
    with hub_errors("creating", repo_id):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with hub_errors("uploading to", repo_id):
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return commit.commit_url


@contextmanager
def hub_errors(action: str, repo_id: str):
    """Turn huggingface_hub's exceptions into a SinkTrainError naming the step and the fix."""
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise SinkTrainError(f"{action} Hub repo {repo_id} needs the network: unset HF_HUB_OFFLINE") from error
    except HfHubHTTPError as error:
        raise SinkTrainError(f"{action} Hub repo {repo_id} failed: {http_advice(error, repo_id)}") from error
    except (TRANSPORT_ERROR, ConnectionError, TimeoutError) as error:
        raise SinkTrainError(
            f"{action} Hub repo {repo_id} failed: could not reach the Hub ({error}); check the network "
            "(and HF_ENDPOINT if set) and retry: a repeated upload only sends what changed"
        ) from error


def http_advice(error: HfHubHTTPError, repo_id: str) -> str:
    """What the status means for a push, plus the server's own words (never request headers)."""
    status = error.response.status_code
    said = error.server_message or str(error).splitlines()[0]
    owner = repo_id.split("/")[0]
    if status == 401:
        return f"the Hub rejected the token (401: missing, expired or invalid): {LOGIN_HINT} ({said})"
    if status == 403:
        return (
            f"the token may not write to {owner!r} (403): use a token with write permission for {owner!r} "
            f"(https://huggingface.co/settings/tokens) or push to a namespace you own ({said})"
        )
    if status == 404:
        return f"the Hub does not know {repo_id!r} or its owner {owner!r} (404): check the name ({said})"
    return f"HTTP {status}: {said}"
