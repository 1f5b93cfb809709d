"""The OCI distribution API (registry v2), behind a Protocol: manifests, blobs, referrers, tags.

`OciRegistry` is what stages and the supply chain use; `RegistryClient` is the real implementation,
over HTTP with httpx. Its `transport` is the seam tests use: tests/doubles/oci_registry.py serves the
distribution API in memory with the status codes and error bodies the spec gives.

The pipeline identifies an image by digest only, so every read here goes by digest once the tag
has been resolved, and every blob read is verified against its digest: a registry that serves
different bytes than it named is an infrastructure failure, not something to scan and trust.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

import httpx

from pipeline.errors import BadInput, InfraError
from pipeline.models import DIGEST_RE

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = f"{OCI_MANIFEST}, {DOCKER_MANIFEST_V2}, {OCI_INDEX}, {DOCKER_MANIFEST_LIST}"
INDEX_TYPES = {OCI_INDEX, DOCKER_MANIFEST_LIST}

# Blobs larger than this are spooled to disk rather than held in memory (layers run to GBs).
_SPOOL_BYTES = 64 * 1024 * 1024


@dataclass
class Manifest:
    digest: str
    media_type: str
    raw: bytes
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def config_descriptor(self) -> dict[str, Any]:
        return dict(self.data.get("config") or {})

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.data.get("layers") or [])

    @property
    def total_bytes(self) -> int:
        """Compressed size as stored: config + layers (what a pull transfers)."""
        return int(self.config_descriptor.get("size", 0)) + sum(int(layer.get("size", 0)) for layer in self.layers)


@runtime_checkable
class OciRegistry(Protocol):
    """One registry host, as the pipeline reads and writes it (`name` is the repository inside it).

    Anything the registry does that the spec does not allow (a status outside the spec, bytes that do not
    hash to their digest, a manifest of the wrong shape) is InfraError naming the endpoint."""

    host: str

    def close(self) -> None: ...

    def resolve(self, name: str, reference: str) -> str | None:
        """The digest `name:reference` (tag or digest) names, or None when the registry has no such manifest."""
        ...

    def has_manifest(self, name: str, reference: str) -> bool: ...

    def manifest(self, name: str, reference: str) -> Manifest:
        """The manifest or index, verified against `reference` when that is a digest."""
        ...

    def image_manifest(self, name: str, reference: str, platform: str = "linux/amd64") -> Manifest: ...

    def blob_bytes(self, name: str, digest: str) -> bytes: ...

    def config(self, manifest: Manifest, name: str) -> tuple[bytes, dict[str, Any]]: ...

    def blob_to_file(self, name: str, digest: str) -> tempfile.SpooledTemporaryFile[bytes]: ...

    def referrers(self, name: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]: ...

    def tags(self, name: str) -> list[str]: ...

    def delete_manifest(self, name: str, digest: str) -> None: ...

    def upload_blob(self, name: str, data: bytes) -> str:
        """Upload `data` as a blob; its digest."""
        ...

    def put_manifest(self, name: str, reference: str, raw: bytes, media_type: str) -> str:
        """Put a manifest under `reference` (tag or digest); the digest the registry names it by."""
        ...


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    """An OCI descriptor as the spec defines it: an object with a sha256 `digest` and an integer `size`."""
    if not isinstance(value, dict):
        raise InfraError(f"descriptor is a {type(value).__name__}, not an object", where=where)
    digest, size = value.get("digest"), value.get("size", 0)
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise InfraError(f"descriptor digest {str(digest)[:80]!r} is not sha256:<64 hex>", where=where)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InfraError(f"descriptor size {str(size)[:40]!r} is not a byte count", where=where)
    return value


def json_object(raw: bytes, what: str, *, where: str) -> dict[str, Any]:
    """`raw` parsed as a JSON object; anything else the registry sent is InfraError naming `what` and `where`."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InfraError(f"{what} is not JSON", where=where) from exc
    if not isinstance(data, dict):
        raise InfraError(f"{what} is a JSON {type(data).__name__}, not an object", where=where)
    return data


def parse_manifest(raw: bytes, *, header_type: str = "", where: str) -> Manifest:
    """A manifest or index the registry sent, checked against the shape the OCI image spec gives it
    (config and layer descriptors, or the entries of an index). A registry that sends anything else is
    misbehaving: InfraError naming `where`, never a KeyError or TypeError later on."""
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    data = json_object(raw, "manifest", where=where)
    media_type = data.get("mediaType") or header_type.split(";")[0].strip()
    if not isinstance(media_type, str):
        raise InfraError("manifest mediaType is not a string", where=where)
    if media_type in INDEX_TYPES or ("manifests" in data and "layers" not in data):
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise InfraError("index has no list of manifests", where=where)
        for i, entry in enumerate(entries):
            _descriptor(entry, f"{where}: manifests[{i}]")
            platform = entry.get("platform")
            if platform is not None and not isinstance(platform, dict):
                raise InfraError("platform is not an object", where=f"{where}: manifests[{i}]")
        media_type = media_type or OCI_INDEX
    else:
        if "config" in data:
            _descriptor(data["config"], f"{where}: config")
        layers = data.get("layers", [])
        if not isinstance(layers, list):
            raise InfraError("layers is not a list", where=f"{where}: layers")
        for i, layer in enumerate(layers):
            _descriptor(layer, f"{where}: layers[{i}]")
    return Manifest(digest=digest, media_type=media_type, raw=raw, data=data)


def _json_object(r: httpx.Response, where: str) -> dict[str, Any]:
    try:
        data = r.json()
    except (ValueError, RecursionError) as exc:
        raise InfraError("the registry answered with a body that is not JSON", where=where) from exc
    if not isinstance(data, dict):
        raise InfraError(f"the registry answered with a JSON {type(data).__name__}, not an object", where=where)
    return data


def split_repository(repository: str) -> tuple[str, str]:
    """`127.0.0.1:5000/llmgate/server` -> (`127.0.0.1:5000`, `llmgate/server`)."""
    host, sep, name = repository.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        raise BadInput(
            "repository must name its registry host, e.g. 127.0.0.1:5000/llmgate/server",
            where=repository,
        )
    return host, name


class RegistryClient:
    """Plain-HTTP client for a loopback registry (https for anything else)."""

    def __init__(self, host: str, *, timeout: float = 30.0, scheme: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.host = host
        if scheme is None:
            loopback = host.startswith(("127.", "localhost", "[::1]"))
            scheme = "http" if loopback else "https"
        self.base_url = f"{scheme}://{host}"
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=True,
                                    transport=transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise InfraError(
                f"registry unreachable: {exc.__class__.__name__}: {exc}",
                where=f"{self.base_url}{path}",
                hint="start it with `llmgate stack up` (or check `llmgate stack status`)",
            ) from exc

    def ping(self) -> bool:
        """True when the registry answers the v2 API base endpoint."""
        try:
            r = self._client.get("/v2/")
        except httpx.HTTPError:
            return False
        return r.status_code in (200, 401)

    def require_up(self) -> None:
        r = self._request("GET", "/v2/")
        if r.status_code not in (200, 401):
            raise InfraError(f"registry answered HTTP {r.status_code} on /v2/", where=f"{self.base_url}/v2/")

    # -- manifests --------------------------------------------------------------------------------
    def resolve(self, name: str, reference: str) -> str | None:
        """Digest of `name:reference` (tag or digest) as the registry names it, or None if absent."""
        path = f"/v2/{name}/manifests/{reference}"
        r = self._request("HEAD", path, headers={"Accept": MANIFEST_ACCEPT})
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise InfraError(f"HEAD manifest answered HTTP {r.status_code}", where=f"{self.base_url}{path}")
        digest = r.headers.get("Docker-Content-Digest")
        if digest is None:  # some registries omit the header on HEAD; the GET body is authoritative
            return self.manifest(name, reference).digest
        return digest

    def has_manifest(self, name: str, reference: str) -> bool:
        return self.resolve(name, reference) is not None

    def manifest(self, name: str, reference: str) -> Manifest:
        path = f"/v2/{name}/manifests/{reference}"
        r = self._request("GET", path, headers={"Accept": MANIFEST_ACCEPT})
        if r.status_code == 404:
            raise InfraError("manifest not found in the registry", where=f"{self.base_url}{path}")
        if r.status_code != 200:
            raise InfraError(f"GET manifest answered HTTP {r.status_code}", where=f"{self.base_url}{path}")
        raw = r.content
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if DIGEST_RE.match(reference) and digest != reference:
            raise InfraError(f"manifest bytes hash to {digest}, not the requested digest", where=path)
        return parse_manifest(raw, header_type=r.headers.get("Content-Type", ""), where=f"{self.base_url}{path}")

    def image_manifest(self, name: str, reference: str, platform: str = "linux/amd64") -> Manifest:
        """The single-image manifest; an index is followed to the entry for `platform`."""
        m = self.manifest(name, reference)
        if not m.is_index:
            return m
        os_, _, arch = platform.partition("/")
        for entry in m.data.get("manifests", []):
            p = entry.get("platform") or {}
            if p.get("os") == os_ and p.get("architecture") == arch:
                return self.manifest(name, entry["digest"])
        raise InfraError(f"index has no manifest for {platform}", where=f"{name}@{m.digest}")

    # -- blobs ------------------------------------------------------------------------------------
    def blob_bytes(self, name: str, digest: str) -> bytes:
        path = f"/v2/{name}/blobs/{digest}"
        r = self._request("GET", path)
        if r.status_code != 200:
            raise InfraError(f"GET blob answered HTTP {r.status_code}", where=f"{self.base_url}{path}")
        if "sha256:" + hashlib.sha256(r.content).hexdigest() != digest:
            raise InfraError("blob bytes do not match their digest", where=f"{self.base_url}{path}")
        return r.content

    def config(self, manifest: Manifest, name: str) -> tuple[bytes, dict[str, Any]]:
        where = f"{self.base_url}/v2/{name}/blobs/{manifest.config_descriptor.get('digest')}"
        if "digest" not in manifest.config_descriptor:
            raise InfraError("the manifest names no config blob", where=f"{name}@{manifest.digest}")
        raw = self.blob_bytes(name, manifest.config_descriptor["digest"])
        config = json_object(raw, "image config", where=where)
        return raw, config

    def blob_to_file(self, name: str, digest: str) -> tempfile.SpooledTemporaryFile[bytes]:
        """Stream a (layer) blob into a spooled temp file, verifying its digest; caller closes it."""
        path = f"/v2/{name}/blobs/{digest}"
        h = hashlib.sha256()
        # closed by the caller (it reads the layer after this returns)
        out: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        try:
            with self._client.stream("GET", path) as r:
                if r.status_code != 200:
                    raise InfraError(f"GET blob answered HTTP {r.status_code}", where=f"{self.base_url}{path}")
                for chunk in r.iter_bytes(1024 * 1024):
                    h.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            out.close()
            why = str(exc) or type(exc).__name__  # a cut connection may carry no message
            raise InfraError(f"registry unreachable: {why}", where=f"{self.base_url}{path}") from exc
        except OSError as exc:  # the spool file: the temp dir is full
            out.close()
            raise InfraError(f"cannot spool the layer to disk: {exc.strerror or exc}",
                             where=tempfile.gettempdir()) from exc
        if "sha256:" + h.hexdigest() != digest:
            out.close()
            raise InfraError("blob bytes do not match their digest", where=f"{self.base_url}{path}")
        out.seek(0)
        return out

    # -- referrers (signatures, attestations) -------------------------------------------------------
    def referrers(self, name: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors that refer to `digest` (OCI 1.1 referrers API, or the tag-schema fallback)."""
        path = f"/v2/{name}/referrers/{digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        r = self._request("GET", path, params=params, headers={"Accept": OCI_INDEX})
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith(OCI_INDEX):
            return list(parse_manifest(r.content, header_type=OCI_INDEX, where=f"{self.base_url}{path}")
                        .data.get("manifests", []))
        # Registries before OCI 1.1 (Debian's distribution 2.8) keep referrers under a tag
        # named after the subject digest, which is also where cosign writes them.
        fallback = digest.replace(":", "-")
        if not self.has_manifest(name, fallback):
            return []
        entries = self.manifest(name, fallback).data.get("manifests", [])
        return [e for e in entries if artifact_type is None or e.get("artifactType") == artifact_type]

    def tags(self, name: str) -> list[str]:
        path = f"/v2/{name}/tags/list"
        r = self._request("GET", path)
        if r.status_code == 404:
            return []
        if r.status_code != 200:
            raise InfraError(f"GET tags answered HTTP {r.status_code}", where=f"{self.base_url}{path}")
        tags = _json_object(r, f"{self.base_url}{path}").get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InfraError("tags is not a list of strings", where=f"{self.base_url}{path}")
        return tags

    def delete_manifest(self, name: str, digest: str) -> None:
        path = f"/v2/{name}/manifests/{digest}"
        r = self._request("DELETE", path)
        if r.status_code not in (202, 404):
            raise InfraError(f"DELETE manifest answered HTTP {r.status_code}", where=f"{self.base_url}{path}")


    # -- writes (test fixtures, attestations) -------------------------------------------------------
    def upload_blob(self, name: str, data: bytes) -> str:
        """Monolithic blob upload; returns the digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = self._request("POST", f"/v2/{name}/blobs/uploads/")
        if r.status_code != 202 or "Location" not in r.headers:
            raise InfraError(f"blob upload start answered HTTP {r.status_code}", where=f"{self.base_url}/v2/{name}")
        location = r.headers["Location"]
        sep = "&" if "?" in location else "?"
        r = self._request("PUT", f"{location}{sep}digest={digest}", content=data,
                          headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise InfraError(f"blob upload answered HTTP {r.status_code}", where=f"{self.base_url}/v2/{name}")
        return digest

    def put_manifest(self, name: str, reference: str, raw: bytes, media_type: str) -> str:
        path = f"/v2/{name}/manifests/{reference}"
        r = self._request("PUT", path, content=raw, headers={"Content-Type": media_type})
        if r.status_code != 201:
            raise InfraError(f"PUT manifest answered HTTP {r.status_code}: {r.text[:300]}", where=f"{self.base_url}{path}")
        return r.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(raw).hexdigest()
