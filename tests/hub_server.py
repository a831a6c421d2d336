"""A Hugging Face Hub on 127.0.0.1 for tests: the endpoints `huggingface_hub` calls to create a repo, upload a
folder and download a snapshot, answered from memory, so push and pull run through the real client with no network.

Uploads are answered with `uploadMode: regular` (content inline in the commit, base64), so no LFS or Xet transfer is
involved; downloads are plain HTTP with the headers `hf_hub_download` reads (`X-Repo-Commit`, `ETag`,
`Content-Length`). `requests` records every path the client asked for, so a test can assert what was (not) fetched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch → commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit → files
    private: bool = False


class FakeHub:
    """The server: `start()` binds a free port, `url` is the endpoint to set as `HF_ENDPOINT`, `stop()` ends it."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def put(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Commits `files` (added to the branch's) straight into a repo; returns the commit id."""
        repo = self.repos.setdefault(repo_id, Repo())
        current = dict(repo.commits.get(repo.refs.get(branch, ""), {}))
        current.update(files)
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in current.items())).encode())
        sha = commit.hexdigest()
        repo.commits[sha], repo.refs[branch] = current, sha
        return sha

    def snapshot(self, repo_id: str, revision: str = "main") -> dict[str, bytes] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        sha = repo.refs.get(revision, revision)
        return repo.commits.get(sha)

    def commit_of(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        sha = repo.refs.get(revision, revision)
        return sha if sha in repo.commits else None


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/?]+)"


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: pytest shows failures, not access logs
            pass

        # ---------------------------------------------------------------------------------------------- helpers
        def _json(self, payload: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _missing(self, what: str) -> None:
            self._json({"error": what}, 404, {"X-Error-Code": "RepoNotFound" if "repo" in what else "EntryNotFound"})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _path(self) -> str:
            path = unquote(urlparse(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            return path

        # ---------------------------------------------------------------------------------------------- routes
        def do_POST(self) -> None:
            path = self._path()
            body = self._body()
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                if repo_id not in hub.repos:
                    hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
                    hub.put(repo_id, {".gitattributes": b""})
                self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
            elif path == "/api/validate-yaml":
                self._json({"errors": [], "warnings": []})
            elif m := re.fullmatch(rf"/api/models/{_REPO}/branch/{_REV}", path):
                repo = hub.repos.get(m["repo"])
                if repo is None:
                    return self._missing("repo")
                repo.refs.setdefault(m["rev"], repo.refs["main"])
                self._json({})
            elif m := re.fullmatch(rf"/api/models/{_REPO}/preupload/{_REV}", path):
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                self._json({"files": modes, "commitOid": hub.commit_of(m["repo"], m["rev"])})
            elif m := re.fullmatch(rf"/api/models/{_REPO}/commit/{_REV}", path):
                if m["repo"] not in hub.repos:
                    return self._missing("repo")
                files = {}
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                sha = hub.put(m["repo"], files, m["rev"])
                self._json({"commitUrl": f"{hub.url}/{m['repo']}/commit/{sha}", "commitOid": sha})
            else:
                self._missing(f"route {path}")

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def _serve(self, head: bool) -> None:
            path = self._path()
            if m := re.fullmatch(rf"/api/models/{_REPO}/revision/{_REV}", path):
                sha = hub.commit_of(m["repo"], m["rev"])
                if sha is None:
                    return self._missing("repo or revision")
                files = hub.repos[m["repo"]].commits[sha]
                siblings = [{"rfilename": name} for name in sorted(files)]
                return self._json({"id": m["repo"], "modelId": m["repo"], "sha": sha, "siblings": siblings})
            if m := re.fullmatch(rf"/api/models/{_REPO}/tree/{_REV}(/.*)?", path):
                files = hub.snapshot(m["repo"], m["rev"])
                if files is None:
                    return self._missing("repo or revision")
                tree = [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in sorted(files.items())
                ]
                return self._json(tree)
            if m := re.fullmatch(rf"/{_REPO}/resolve/{_REV}/(?P<file>.+)", path):
                sha = hub.commit_of(m["repo"], m["rev"])
                files = hub.repos[m["repo"]].commits[sha] if sha else None
                if files is None or m["file"] not in files:
                    return self._missing("entry")
                data = files[m["file"]]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", sha)
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                return None
            return self._missing(f"route {path}")

    return Handler
