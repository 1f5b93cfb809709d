"""The OCI registry seam: `OciRegistry` (the Protocol stages use), `RegistryClient` (the real one) and
tests/doubles/oci_registry.py, which answers what the local registry (distribution 2.8) answers, request
for request, and is therefore never more lenient than it; and the client's refusals of a registry that
lies (bytes that do not hash to their digest, statuses the spec does not give)."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipeline.adapters.bundle import Adapters
from pipeline.adapters.registry import DOCKER_MANIFEST_V2, OCI_INDEX, OCI_MANIFEST, OciRegistry, RegistryClient
from pipeline.errors import InfraError
from tests.doubles.oci_registry import OciRegistryDouble

HOST = "127.0.0.1:5000"
REPO = "llmgate/test-registry-double"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(b), "size": len(b)}
                   for b in layers],
        **extra,
    }).encode()


def _code(r: httpx.Response) -> str | None:
    try:
        return str(r.json()["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _upload(c: httpx.Client, name: str, data: bytes, digest: str | None = None) -> httpx.Response:
    start = c.post(f"/v2/{name}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = start.headers["Location"]  # may carry its own query (distribution's `_state`)
    sep = "&" if "?" in location else "?"
    return c.put(f"{location}{sep}digest={digest or _digest(data)}", content=data,
                 headers={"Content-Type": "application/octet-stream"})


def _scenario(c: httpx.Client) -> list[tuple[str, int, str | None]]:
    """Requests of every kind the client makes, good and bad; each answer as (step, status, error code)."""
    nonce = os.urandom(16).hex()
    name, tag = REPO, f"t-{nonce[:12]}"
    config, layer, stray = (f'{{"n":"{nonce}"}}'.encode(), f"layer {nonce}".encode(), f"stray {nonce}".encode())
    raw = _manifest(config, [layer])
    seen: list[tuple[str, int, str | None]] = []

    def note(step: str, r: httpx.Response) -> httpx.Response:
        seen.append((step, r.status_code, _code(r)))
        return r

    note("base", c.get("/v2/"))
    note("head unknown manifest", c.head(f"/v2/{name}/manifests/{tag}"))
    note("get unknown manifest", c.get(f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}))
    note("get unknown blob", c.get(f"/v2/{name}/blobs/{_digest(stray)}"))
    note("tags of an unknown repository", c.get(f"/v2/{name}-{nonce[:8]}/tags/list"))
    note("upload with the wrong digest", _upload(c, name, layer, _digest(stray)))
    note("put manifest before its blobs", c.put(f"/v2/{name}/manifests/{tag}", content=raw,
                                                headers={"Content-Type": OCI_MANIFEST}))
    note("upload config", _upload(c, name, config))
    up = note("upload layer", _upload(c, name, layer))
    seen.append(("upload layer names its digest", 0, str(up.headers.get("Docker-Content-Digest") == _digest(layer))))
    note("put manifest under another digest", c.put(f"/v2/{name}/manifests/{_digest(stray)}", content=raw,
                                                    headers={"Content-Type": OCI_MANIFEST}))
    put = note("put manifest", c.put(f"/v2/{name}/manifests/{tag}", content=raw,
                                     headers={"Content-Type": OCI_MANIFEST}))
    seen.append(("put names the digest", 0, str(put.headers.get("Docker-Content-Digest") == _digest(raw))))
    head = note("head manifest by tag", c.head(f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}))
    seen.append(("head names the digest", 0, str(head.headers.get("Docker-Content-Digest") == _digest(raw))))
    got = note("get manifest by digest", c.get(f"/v2/{name}/manifests/{_digest(raw)}",
                                               headers={"Accept": OCI_MANIFEST}))
    seen.append(("the bytes as pushed", 0, str(got.content == raw)))
    seen.append(("its type as pushed", 0, got.headers.get("Content-Type")))
    note("get manifest without accepting its type", c.get(f"/v2/{name}/manifests/{tag}"))
    note("put manifest under another type", c.put(f"/v2/{name}/manifests/{tag}", content=raw,
                                                  headers={"Content-Type": DOCKER_MANIFEST_V2}))
    got = note("get blob", c.get(f"/v2/{name}/blobs/{_digest(layer)}"))
    seen.append(("the blob as pushed", 0, str(got.content == layer)))
    tags = note("tags", c.get(f"/v2/{name}/tags/list"))
    seen.append(("the tag is listed", 0, str(tag in (tags.json().get("tags") or []))))
    note("referrers", c.get(f"/v2/{name}/referrers/{_digest(raw)}", headers={"Accept": OCI_INDEX}))
    note("invalid tag", c.get(f"/v2/{name}/manifests/-{tag}"))
    note("delete by tag", c.delete(f"/v2/{name}/manifests/{tag}"))
    note("delete", c.delete(f"/v2/{name}/manifests/{_digest(raw)}"))
    note("get deleted manifest", c.get(f"/v2/{name}/manifests/{_digest(raw)}", headers={"Accept": OCI_MANIFEST}))
    note("delete it again", c.delete(f"/v2/{name}/manifests/{_digest(raw)}"))
    return seen


SPEC = [
    ("base", 200, None),
    ("head unknown manifest", 404, None),
    ("get unknown manifest", 404, "MANIFEST_UNKNOWN"),
    ("get unknown blob", 404, "BLOB_UNKNOWN"),
    ("tags of an unknown repository", 404, "NAME_UNKNOWN"),
    ("upload with the wrong digest", 400, "DIGEST_INVALID"),
    ("put manifest before its blobs", 400, "MANIFEST_BLOB_UNKNOWN"),
    ("upload config", 201, None),
    ("upload layer", 201, None),
    ("upload layer names its digest", 0, "True"),
    ("put manifest under another digest", 400, "DIGEST_INVALID"),
    ("put manifest", 201, None),
    ("put names the digest", 0, "True"),
    ("head manifest by tag", 200, None),
    ("head names the digest", 0, "True"),
    ("get manifest by digest", 200, None),
    ("the bytes as pushed", 0, "True"),
    ("its type as pushed", 0, OCI_MANIFEST),
    ("get manifest without accepting its type", 404, "MANIFEST_UNKNOWN"),
    ("put manifest under another type", 400, "MANIFEST_INVALID"),
    ("get blob", 200, None),
    ("the blob as pushed", 0, "True"),
    ("tags", 200, None),
    ("the tag is listed", 0, "True"),
    ("referrers", 404, None),  # distribution 2.8: no referrers API; clients fall back to the tag schema
    ("invalid tag", 404, None),
    ("delete by tag", 400, "DIGEST_INVALID"),  # distribution deletes by digest only
    ("delete", 202, None),
    ("get deleted manifest", 404, "MANIFEST_UNKNOWN"),
    ("delete it again", 404, "MANIFEST_UNKNOWN"),
]


def test_the_double_answers_as_the_spec_and_distribution_do():
    with httpx.Client(base_url=f"http://{HOST}", transport=OciRegistryDouble()) as c:
        assert _scenario(c) == SPEC


def test_the_local_registry_answers_the_same(local_stack):  # type: ignore[no-untyped-def]
    """The same requests against the real registry: any answer where the double is more lenient (or
    stricter) shows up as a difference here."""
    with httpx.Client(base_url=f"http://{local_stack.registry}", timeout=30) as c:
        assert _scenario(c) == SPEC


# -- the seam ------------------------------------------------------------------------------------
def _members(cls: type) -> dict[str, inspect.Signature]:
    return {n: inspect.signature(getattr(cls, n)) for n, v in vars(cls).items()
            if callable(v) and not n.startswith("_")}


def test_the_real_client_implements_the_protocol_with_its_signatures():
    protocol = _members(OciRegistry)
    assert set(protocol) <= set(dir(RegistryClient))
    for name, sig in protocol.items():
        assert inspect.signature(getattr(RegistryClient, name)) == sig, name
    client = RegistryClient(HOST, transport=OciRegistryDouble())
    assert isinstance(client, OciRegistry)
    assert not isinstance(object(), OciRegistry)


def _client(double: OciRegistryDouble) -> RegistryClient:
    return RegistryClient(HOST, transport=double)


def _pushed(reg: OciRegistry) -> tuple[bytes, bytes, bytes]:
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"layer bytes"
    for blob in (config, layer):
        assert reg.upload_blob(REPO, blob) == _digest(blob)
    raw = _manifest(config, [layer])
    assert reg.put_manifest(REPO, "v1", raw, OCI_MANIFEST) == _digest(raw)
    return config, layer, raw


def test_the_bundles_registry_and_signer_use_the_registry_a_test_puts_there(monkeypatch: pytest.MonkeyPatch):
    from pipeline.adapters import cosign
    from pipeline.supplychain.cosign_keys import SigningKey, generate_key

    monkeypatch.setattr(cosign.Cosign, "discover", classmethod(lambda cls, options=None: None))
    double = OciRegistryDouble()
    bundle = Adapters(registries={HOST: _client(double)})
    _config, _layer, raw = _pushed(bundle.registry(HOST))
    image, key = f"{HOST}/{REPO}@{_digest(raw)}", SigningKey(generate_key(), "test")
    signer = bundle.signing()
    assert not signer.verify_image(image, key.public_pem()).verified
    signer.sign_image(image, key)
    assert signer.verify_image(image, key.public_pem()).verified
    sig_tag = _digest(raw).replace(":", "-") + ".sig"
    assert ("PUT", f"/v2/{REPO}/manifests/{sig_tag}") in double.requests


def test_the_client_reads_through_the_double():
    reg = _client(OciRegistryDouble())
    config, layer, raw = _pushed(reg)
    assert reg.resolve(REPO, "v1") == _digest(raw)
    assert reg.resolve(REPO, "v2") is None
    m = reg.image_manifest(REPO, "v1")
    assert (m.digest, m.raw, m.total_bytes) == (_digest(raw), raw, len(config) + len(layer))
    assert reg.config(m, REPO) == (config, json.loads(config))
    assert reg.blob_bytes(REPO, _digest(layer)) == layer
    with reg.blob_to_file(REPO, _digest(layer)) as f:
        assert f.read() == layer
    assert reg.tags(REPO) == ["v1"]
    assert reg.referrers(REPO, _digest(raw)) == []
    reg.delete_manifest(REPO, _digest(raw))
    assert reg.resolve(REPO, "v1") is None


LIES: list[tuple[str, Callable[[RegistryClient, bytes, bytes, bytes], Any]]] = [
    ("blob", lambda reg, _c, layer, _r: reg.blob_bytes(REPO, _digest(layer))),
    ("streamed blob", lambda reg, _c, layer, _r: reg.blob_to_file(REPO, _digest(layer))),
    ("config", lambda reg, config, _l, raw: reg.config(reg.manifest(REPO, _digest(raw)), REPO)),
    ("manifest", lambda reg, _c, _l, raw: reg.manifest(REPO, _digest(raw))),
]


@pytest.mark.parametrize(("what", "read"), LIES, ids=[w for w, _ in LIES])
def test_bytes_that_do_not_hash_to_their_digest_are_an_infra_error(what, read):  # type: ignore[no-untyped-def]
    double = OciRegistryDouble()
    reg = _client(double)
    config, layer, raw = _pushed(reg)
    read(reg, config, layer, raw)  # the honest registry: no error
    target = {"blob": layer, "streamed blob": layer, "config": config, "manifest": raw}[what]
    double.serve_instead[_digest(target)] = target + b" "
    with pytest.raises(InfraError, match="match|hash"):
        read(reg, config, layer, raw)


@pytest.mark.parametrize(("method", "path", "call"), [
    ("HEAD", f"/v2/{REPO}/manifests/v1", lambda reg: reg.resolve(REPO, "v1")),
    ("GET", f"/v2/{REPO}/tags/list", lambda reg: reg.tags(REPO)),
    ("POST", f"/v2/{REPO}/blobs/uploads/", lambda reg: reg.upload_blob(REPO, b"x")),
    ("PUT", f"/v2/{REPO}/manifests/v1", lambda reg: reg.put_manifest(REPO, "v1", b"{}", OCI_MANIFEST)),
    ("DELETE", f"/v2/{REPO}/manifests/{_digest(b'x')}", lambda reg: reg.delete_manifest(REPO, _digest(b"x"))),
])
def test_a_status_the_spec_does_not_give_is_an_infra_error(method, path, call):  # type: ignore[no-untyped-def]
    double = OciRegistryDouble()
    double.status_for[(method, path)] = 500
    with pytest.raises(InfraError, match="HTTP 500"):
        call(_client(double))


def test_a_registry_that_swaps_a_layer_never_yields_a_clean_leak_report():
    """The leak check reads layers through the seam: a secret in a layer is found, and a registry that
    serves other (clean) bytes under that layer's digest stops the check instead of passing it."""
    import gzip

    from pipeline.supplychain.leak import check_image
    from tests.test_hostile_leak import _push  # a one-layer image of the files given

    token = b"tok_" + os.urandom(16).hex().encode()
    double = OciRegistryDouble()
    reg = _client(double)
    digest = _push(reg, REPO, {"srv/app.env": b"API_TOKEN=" + token + b"\n"}, [])
    report = check_image(reg, f"{HOST}/{REPO}", digest, {"token": token})
    assert [f.secret_id for f in report.findings if f.where == "layer"] == ["token"]
    layer = reg.manifest(REPO, digest).layers[0]["digest"]
    double.serve_instead[layer] = gzip.compress(b"clean", mtime=0)
    with pytest.raises(InfraError, match="do not match their digest"):
        check_image(reg, f"{HOST}/{REPO}", digest, {"token": token})
