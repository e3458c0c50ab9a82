"""A local stand-in for the Hugging Face Hub, for tests that run the real huggingface_hub client.

    hub = HubStandIn(upload_mode="lfs").start()     # 127.0.0.1, a free port, a server thread
    env = {..., "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token}   # for a fresh client process
    ...                                             # create_repo / upload_folder / snapshot_download
    assert "PUT /lfs-upload/<sha256>" in hub.requests  # "METHOD path" lines, never headers
    hub.repos["alice/tiny"].files()                 # {path: bytes} at the head commit
    hub.stop()

It speaks what huggingface_hub 2.4 sends for create_repo, upload_folder, snapshot_download and
from_pretrained by repo id (read from huggingface_hub's hf_api.py, _commit_api.py, lfs.py and
file_download.py; one branch, main; one page per listing). Rules it keeps like the Hub: writes without the token get 401; a private repo is 404 RepoNotFound to requests
without the token; a missing file is 404 with ``X-Error-Code: EntryNotFound``.

No Xet: ``upload_mode="lfs"`` answers "lfs" for binary or large files, so a client run with
HF_HUB_DISABLE_XET=1 uses the LFS batch + PUT + verify path (with Xet on it would ask for a Xet
token and get a 501). ``upload_mode="regular"`` answers "regular" for every file, which the default
client (hf-xet installed) then sends base64 in the commit, never touching Xet. Downloads never
advertise Xet hashes, so they are plain GETs either way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub's rule: this large, or binary, goes to LFS
EMPTY_COMMIT = "0" * 40
REPO = r"(?P<repo_id>[^/]+/[^/]+)"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A file at a commit: its bytes and whether git holds them as an LFS pointer."""

    data: bytes
    lfs: bool

    def pointer(self) -> bytes:
        sha256 = hashlib.sha256(self.data).hexdigest()
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(self.data)}\n".encode()

    def oid(self) -> str:  # the git blob id the client compares with its local file
        return git_blob_sha1(self.pointer() if self.lfs else self.data)

    def etag(self) -> str:  # the Hub's ETag: sha256 for LFS files, git blob id otherwise
        return hashlib.sha256(self.data).hexdigest() if self.lfs else self.oid()


@dataclass
class Repo:
    private: bool
    head: str = EMPTY_COMMIT
    commits: dict[str, dict[str, Blob]] = field(default_factory=lambda: {EMPTY_COMMIT: {}})

    def at(self, revision: str) -> tuple[str, dict[str, Blob]] | None:
        sha = self.head if revision == "main" else revision
        return (sha, self.commits[sha]) if sha in self.commits else None

    def blobs(self) -> dict[str, Blob]:  # at the head commit
        return self.commits[self.head]

    def files(self) -> dict[str, bytes]:
        return {path: blob.data for path, blob in self.blobs().items()}


class HubStandIn:
    """The server, its in-memory store and request log; ``upload_mode`` may change between tests."""

    def __init__(self, upload_mode: str = "lfs"):
        self.upload_mode = upload_mode
        self.token = "hf_standin_" + secrets.token_hex(12)  # random: a leak check can grep for it
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes, PUT before the commit names them
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStandIn:
        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.hub = self
        threading.Thread(target=self.server.serve_forever, name="hub-stand-in", daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients drop keep-alive sockets when they exit; anything else is a stand-in bug to see.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


# (method, path pattern, handler). Named groups become the handler's keyword arguments, unquoted;
# with a repo_id, route() first checks the repo (and for a GET its revision) and adds it as ``repo``.
ROUTES = [
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", "lfs_verify"),
    ("GET", rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?", "model_info"),
    ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/.*)?", "tree"),
    ("GET", rf"/api/models/{REPO}/xet-write-token/.+", "no_xet"),
    ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

    def log_message(self, fmt, *args):  # the default logs to stderr; hub.requests is the log
        pass

    def route(self):
        """Answer one request: log it, read its body, dispatch it by ROUTES (HEAD as a GET)."""
        self.hub, self.head = self.server.hub, self.command == "HEAD"
        method, raw = "GET" if self.head else self.command, urlsplit(self.path).path
        self.hub.requests.append(f"{self.command} {unquote(raw)}")
        body = self.read_body()  # read even when unrouted, or the kept-alive connection desyncs
        for verb, pattern, name in ROUTES:
            if verb == method and (match := re.fullmatch(pattern, raw)):
                # default: the one optional group, model_info's revision
                args = {key: unquote(value) for key, value in match.groupdict(default="main").items()}
                if "repo_id" in args:
                    args["repo"] = self.allowed(args["repo_id"], method != "GET", args.get("rev"))
                    if args["repo"] is None:
                        return
                return getattr(self, name)(body, **args)
        self.error(404, "NotFound", f"the stand-in has no route {method} {raw}")

    do_GET = do_HEAD = do_POST = do_PUT = route

    # ---- plumbing ---------------------------------------------------------------------------
    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("content-length") or 0))
        out = bytearray()
        while size := int(self.rfile.readline().split(b";")[0], 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return bytes(out)

    def reply(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not self.head:  # a HEAD body would be read as the start of the next response
            self.wfile.write(data)

    def error(self, status: int, code: str, message: str, headers: dict | None = None):
        self.reply(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def authorized(self) -> bool:
        return secrets.compare_digest(self.headers.get("authorization", ""), f"Bearer {self.hub.token}")

    def allowed(self, repo_id: str, write: bool, rev: str | None) -> Repo | None:
        """The repo if this request may read (or, with ``write``, change) it at ``rev``; else None,
        having answered the Hub's error."""
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self.authorized()):  # private: as if absent
            self.error(404, "RepoNotFound", f"Repository Not Found for url: {self.hub.url}/{repo_id}")
        elif write and not self.authorized():
            self.error(401, "Unauthorized", "Invalid username or password.")
        elif not write and rev is not None and repo.at(rev) is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        else:
            return repo
        return None

    # ---- writes -----------------------------------------------------------------------------
    def create_repo(self, body: bytes):
        if not self.authorized():
            return self.error(401, "Unauthorized", "Invalid username or password.")
        payload = json.loads(body)
        repo_id = f"{payload.get('organization') or 'standin'}/{payload['name']}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                url = f"{self.hub.url}/{repo_id}"
                return self.reply(409, {"error": "You already created this model repo", "url": url})
            self.hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        self.reply(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self, body: bytes):
        self.reply(200, {"errors": [], "warnings": []})

    def preupload(self, body: bytes, repo_id: str, rev: str, repo: Repo):
        current = repo.blobs()
        answers = []
        for file in json.loads(body)["files"]:
            binary = b"\0" in base64.b64decode(file["sample"])
            lfs = self.hub.upload_mode == "lfs" and file["size"] > 0 and (binary or file["size"] >= LFS_MIN_SIZE)
            known = current.get(file["path"])  # the client skips a file whose git blob id matches
            answers.append({"path": file["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": known.oid() if known else None})
        self.reply(200, {"files": answers, "commitOid": repo.head})

    def lfs_batch(self, body: bytes, repo_id: str, repo: Repo):
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:  # no "actions": already stored
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}"},
                                    "verify": {"href": f"{self.hub.url}/lfs-verify/{obj['oid']}"}}
            objects.append(entry)
        self.reply(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, body: bytes, oid: str):  # presigned-URL style: no token, the oid is the check
        if hashlib.sha256(body).hexdigest() != oid:
            return self.error(400, "BadOid", "the uploaded bytes do not match the sha256 in the URL")
        self.hub.lfs_objects[oid] = body
        self.reply(200, raw=b"")

    def lfs_verify(self, body: bytes, oid: str):
        stored = oid in self.hub.lfs_objects
        self.reply(200 if stored else 404, {"ok": stored})

    def commit(self, body: bytes, repo_id: str, rev: str, repo: Repo):  # always onto main
        with self.hub.lock:
            files = dict(repo.blobs())
            for line in map(json.loads, filter(str.strip, body.decode().splitlines())):
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile" and value["oid"] not in self.hub.lfs_objects:
                    return self.error(422, "LfsObjectMissing", f"LFS object {value['oid']} was never uploaded")
                elif key == "lfsFile":
                    files[value["path"]] = Blob(self.hub.lfs_objects[value["oid"]], lfs=True)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: blob for path, blob in files.items() if not path.startswith(prefix)}
            sha = hashlib.sha1(body + repo.head.encode()).hexdigest()
            repo.commits[sha], repo.head = files, sha
        self.reply(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}"})

    def no_xet(self, body: bytes, repo_id: str, repo: Repo):
        self.error(501, "XetNotSupported", "no Xet here: set HF_HUB_DISABLE_XET=1 or upload_mode='regular'")

    # ---- reads ------------------------------------------------------------------------------
    def model_info(self, body: bytes, repo_id: str, rev: str, repo: Repo):
        sha, files = repo.at(rev)
        self.reply(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                         "siblings": [{"rfilename": path} for path in sorted(files)]})

    def tree(self, body: bytes, repo_id: str, rev: str, repo: Repo):
        entries, folders = [], set()
        for path, blob in sorted(repo.at(rev)[1].items()):
            parts = path.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
            entry = {"type": "file", "path": path, "size": len(blob.data), "oid": blob.oid()}
            if blob.lfs:  # no "xetHash": the client downloads with plain GETs
                entry["lfs"] = {"oid": blob.etag(), "size": len(blob.data), "pointerSize": len(blob.pointer())}
            entries.append(entry)
        entries += [{"type": "directory", "path": folder, "oid": EMPTY_COMMIT} for folder in sorted(folders)]
        self.reply(200, entries)  # one page: no Link header

    def resolve(self, body: bytes, repo_id: str, rev: str, path: str, repo: Repo):
        sha, files = repo.at(rev)
        if (blob := files.get(path)) is None:  # from_pretrained probes candidates this way
            return self.error(404, "EntryNotFound", f"{path} does not exist at {rev}", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.etag()}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers |= {"X-Linked-Etag": f'"{blob.etag()}"', "X-Linked-Size": str(len(blob.data))}
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("range", ""))
        if ranged and not self.head:  # a resumed download
            start = int(ranged[1])
            end = int(ranged[2]) if ranged[2] else len(blob.data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(blob.data)}"
            return self.reply(206, headers=headers, raw=blob.data[start:end + 1])
        self.reply(200, headers=headers, raw=blob.data)


def client_env(hub: HubStandIn, home: Path, token: str | None, xet: bool = True) -> dict[str, str]:
    """A clean client environment: no HF_* from outside (HF_HUB_OFFLINE from conftest, a real
    token or cache of whoever runs the tests), the stand-in as endpoint, ``home`` as HF_HOME."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if token is not None:
        env["HF_TOKEN"] = token
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    return env
