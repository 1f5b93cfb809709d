"""TEST DOUBLE "OCI registry": the distribution API (registry v2) in memory, as an httpx transport.

It is not a registry: nothing is stored on disk and nothing is garbage-collected. It stands where a
registry is not wanted (no network, a fault to inject) behind the real client:
`RegistryClient(host, transport=OciRegistryDouble())`, so the client's own status handling and digest
checks run unchanged. It answers with the status codes and error bodies of the OCI distribution spec
(v1.1, "Pulling", "Pushing", "Content discovery", "Content management", error codes table) as
distribution 2.8 (`registry:2`, the registry `llmgate stack up` runs) sends them; where the spec lets a
registry choose, it chooses what distribution 2.8 does, and tests/test_registry_double.py replays the
same requests against that registry to hold the two to the same answers:

- `GET /v2/`: 200 `{}`.
- manifests: `GET`/`HEAD /v2/<name>/manifests/<reference>`: 200 with the bytes exactly as pushed,
  `Content-Type` (the type they were pushed with) and `Docker-Content-Digest`; unknown, or of a type the
  `Accept` header does not list: 404 `MANIFEST_UNKNOWN` (no body on HEAD). `PUT`: 201 with `Location` and
  `Docker-Content-Digest`; 400 `MANIFEST_INVALID` for a body that is not a JSON object or whose
  `mediaType` is not its `Content-Type`, `MANIFEST_BLOB_UNKNOWN` when the config or a
  layer blob (or, for an index, an entry's manifest) is not in the repository, `DIGEST_INVALID` when the
  reference is a digest the bytes do not hash to. `DELETE` by digest: 202 (deletion enabled, as in
  `llmgate stack up`'s config), 404 `MANIFEST_UNKNOWN` when absent, the tags pointing at it going with it;
  by tag: 400 `DIGEST_INVALID` (distribution deletes only by digest).
- blobs: `GET`/`HEAD /v2/<name>/blobs/<digest>`: 200 with the bytes, or 404 `BLOB_UNKNOWN`. Uploads are
  monolithic: `POST /v2/<name>/blobs/uploads/` 202 with `Location` (a session), then
  `PUT <location>?digest=<digest>` 201, or 400 `DIGEST_INVALID` when the bytes do not hash to it, 404
  `BLOB_UPLOAD_UNKNOWN` for a session it did not open.
- `GET /v2/<name>/tags/list`: 200 `{"name", "tags"}` (sorted), 404 `NAME_UNKNOWN` for a repository
  with nothing in it.
- referrers: distribution 2.8 has no referrers API (`/v2/<name>/referrers/<digest>` is 404 "page not
  found"); clients fall back to the tag schema (`sha256-<hex>`). `referrers_api=True` makes it an OCI 1.1
  registry instead: 200 with an image index of the manifests whose `subject` is that digest, filtered by
  `artifactType` (header `OCI-Filters-Applied`).
- Names and references outside the spec's grammar match no route: 404 "page not found", as there.

Faults, for the adversarial cases: `serve_instead[digest] = bytes` serves other bytes for a blob or
manifest than the ones its digest names (a lying registry); `status_for[(method, path)] = code` answers
one request with a bare status. Every request is kept in `requests` as (method, path).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

# The spec's grammar (distribution-spec, "Pulling manifests").
NAME = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
TAG = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
DIGEST = r"sha256:[a-f0-9]{64}"
_ROUTE = re.compile(rf"/v2/(?P<name>{NAME})/(?:(?P<kind>manifests|blobs|referrers)/(?P<ref>{TAG}|{DIGEST})"
                    rf"|(?P<uploads>blobs/uploads/)(?P<session>[a-f0-9-]*)|(?P<tags>tags/list))")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_INDEX_TYPES = {OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(status: int, code: str, message: str, detail: Any = None) -> httpx.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return httpx.Response(status, json=body, headers={"Docker-Distribution-Api-Version": "registry/2.0"})


def _not_found() -> httpx.Response:
    return httpx.Response(404, content=b"404 page not found\n", headers={"Content-Type": "text/plain; charset=utf-8"})


@dataclass
class _Repo:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # digest -> (raw, media type)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


class OciRegistryDouble(httpx.BaseTransport):
    def __init__(self, *, referrers_api: bool = False) -> None:
        self.referrers_api = referrers_api
        self.repos: dict[str, _Repo] = {}
        self.uploads: dict[str, str] = {}  # session -> repository
        self.serve_instead: dict[str, bytes] = {}
        self.status_for: dict[tuple[str, str], int] = {}
        self.requests: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.requests.append((method, path))
        if (method, path) in self.status_for:
            return httpx.Response(self.status_for[(method, path)])
        if path == "/v2/" and method in ("GET", "HEAD"):
            return httpx.Response(200, json={})
        m = _ROUTE.fullmatch(path)
        if m is None:
            return _not_found()
        name = m["name"]
        if m["tags"] and method == "GET":
            return self._tags(name)
        if m["uploads"] is not None:
            return self._upload(request, name, m["session"])
        ref = m["ref"]
        if m["kind"] == "manifests":
            return self._manifest(request, name, ref)
        if m["kind"] == "blobs" and method in ("GET", "HEAD") and re.fullmatch(DIGEST, ref):
            blob = self.repos.get(name, _Repo()).blobs.get(ref)
            if blob is None:
                return _error(404, "BLOB_UNKNOWN", "blob unknown to registry", ref)
            return self._content(method, ref, self.serve_instead.get(ref, blob), "application/octet-stream")
        if m["kind"] == "referrers" and self.referrers_api and method == "GET" and re.fullmatch(DIGEST, ref):
            return self._referrers(request, name, ref)
        return _not_found()

    # -- reads ------------------------------------------------------------------------------------
    @staticmethod
    def _content(method: str, digest: str, body: bytes, media_type: str) -> httpx.Response:
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, "Content-Length": str(len(body))}
        return httpx.Response(200, headers=headers, content=b"" if method == "HEAD" else body)

    def _tags(self, name: str) -> httpx.Response:
        repo = self.repos.get(name)
        if repo is None or not (repo.manifests or repo.blobs):
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})
        return httpx.Response(200, json={"name": name, "tags": sorted(repo.tags)})

    def _referrers(self, request: httpx.Request, name: str, digest: str) -> httpx.Response:
        wanted = request.url.params.get("artifactType")
        entries = []
        for d, (raw, media_type) in self.repos.get(name, _Repo()).manifests.items():
            doc = json.loads(raw)
            if (doc.get("subject") or {}).get("digest") != digest:
                continue
            artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
            if wanted and artifact_type != wanted:
                continue
            entries.append({"mediaType": media_type, "digest": d, "size": len(raw), "artifactType": artifact_type,
                            **({"annotations": doc["annotations"]} if doc.get("annotations") else {})})
        headers = {"Content-Type": OCI_INDEX, **({"OCI-Filters-Applied": "artifactType"} if wanted else {})}
        return httpx.Response(200, headers=headers, json={"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                          "manifests": entries})

    # -- manifests --------------------------------------------------------------------------------
    def _manifest(self, request: httpx.Request, name: str, ref: str) -> httpx.Response:
        repo = self.repos.get(name, _Repo())
        digest = ref if re.fullmatch(DIGEST, ref) else repo.tags.get(ref)
        if request.method == "PUT":
            return self._put_manifest(request, name, ref)
        if digest is None or digest not in repo.manifests:
            if request.method == "HEAD":
                return httpx.Response(404)
            if request.method in ("GET", "DELETE"):
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": ref} if digest is None else None)
            return _not_found()
        if request.method in ("GET", "HEAD"):
            raw, media_type = repo.manifests[digest]
            accepted = {a.split(";")[0].strip() for a in request.headers.get("Accept", "").split(",")}
            if media_type not in accepted:  # distribution 2.8 converts nothing and answers as if absent
                return httpx.Response(404) if request.method == "HEAD" else _error(
                    404, "MANIFEST_UNKNOWN", "OCI manifest found, but accept header does not support OCI manifests")
            return self._content(request.method, digest, self.serve_instead.get(digest, raw), media_type)
        if request.method == "DELETE":
            if digest != ref:  # by tag: distribution 2.8 deletes manifests only by digest
                return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            del repo.manifests[digest]
            repo.tags = {t: d for t, d in repo.tags.items() if d != digest}
            return httpx.Response(202)
        return _not_found()

    def _put_manifest(self, request: httpx.Request, name: str, ref: str) -> httpx.Response:
        raw = request.read()
        digest = _digest(raw)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return _error(400, "MANIFEST_INVALID", "manifest invalid")
        repo = self.repos.setdefault(name, _Repo())
        media_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if doc.get("mediaType", media_type) != media_type:
            return _error(400, "MANIFEST_INVALID", "manifest invalid", {})
        if media_type in _INDEX_TYPES:
            missing = [e.get("digest") for e in doc.get("manifests") or [] if e.get("digest") not in repo.manifests]
        else:
            wanted = [doc.get("config") or {}, *(doc.get("layers") or [])]
            missing = [d.get("digest") for d in wanted if d.get("digest") not in repo.blobs]
        if missing:
            return _error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", missing[0])
        if re.fullmatch(DIGEST, ref) and ref != digest:
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        repo.manifests[digest] = (raw, media_type)
        if not re.fullmatch(DIGEST, ref):
            repo.tags[ref] = digest
        return httpx.Response(201, headers={"Location": f"/v2/{name}/manifests/{digest}",
                                            "Docker-Content-Digest": digest})

    # -- blob uploads -----------------------------------------------------------------------------
    def _upload(self, request: httpx.Request, name: str, session: str) -> httpx.Response:
        if request.method == "POST" and not session:
            session = str(uuid.uuid4())
            self.uploads[session] = name
            return httpx.Response(202, headers={"Location": f"/v2/{name}/blobs/uploads/{session}",
                                                "Docker-Upload-UUID": session, "Range": "0-0"})
        if request.method != "PUT" or not session:
            return _not_found()
        if self.uploads.get(session) != name:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
        data = request.read()
        wanted = (parse_qs(request.url.query.decode()).get("digest") or [""])[0]
        if wanted != _digest(data):
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        del self.uploads[session]
        self.repos.setdefault(name, _Repo()).blobs[wanted] = data
        return httpx.Response(201, headers={"Location": f"/v2/{name}/blobs/{wanted}", "Docker-Content-Digest": wanted})
