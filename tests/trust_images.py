"""Small test images pushed to the real local registry (127.0.0.1:5000) under `trust-*` repositories,
and removed again (the image and every `sha256-<hex>.sig/.att` manifest written for it)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.adapters import cosign_layout as L
from pipeline.adapters.log_artifact import TAG_PREFIX as LOG_TAG_PREFIX
from pipeline.adapters.registry import RegistryClient

REGISTRY = "127.0.0.1:5000"


def _layer() -> bytes:
    """A tar holding one file of random content: a real layer (trivy reads it for an SBOM), unique per image."""
    buf = io.BytesIO()
    data = os.urandom(256)
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/llmgate-test")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push_image(reg: RegistryClient, name: str, tag: str = "t") -> str:
    """A one-layer OCI image with random content; returns its manifest digest."""
    layer = _layer()
    layer_digest = reg.upload_blob(name, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = reg.upload_blob(name, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": L.OCI_MANIFEST,
        "config": {"mediaType": L.OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer), "digest": layer_digest}],
    }).encode()
    return reg.put_manifest(name, tag, manifest, L.OCI_MANIFEST)


def cleanup(reg: RegistryClient, name: str, digests: list[str]) -> None:
    """The images, their `.sig`/`.att` manifests, the bundles that refer to them (and the referrers tag
    listing them), and the repository's verdict log artifacts."""
    for d in digests:
        for entry in reg.referrers(name, d):
            reg.delete_manifest(name, str(entry["digest"]))
        for tag in (L.tag_for(d, L.SIG_SUFFIX), L.tag_for(d, L.ATT_SUFFIX), d.replace(":", "-")):
            found = reg.resolve(name, tag)
            if found:
                reg.delete_manifest(name, found)
        reg.delete_manifest(name, d)
    for tag in reg.tags(name):
        if tag.startswith(LOG_TAG_PREFIX) and (found := reg.resolve(name, tag)):
            reg.delete_manifest(name, found)


class TrustRepo:
    """One `trust-<random>/img` repository; `image()` pushes a fresh image and returns repo@digest."""

    def __init__(self, reg: RegistryClient) -> None:
        self.reg = reg
        self.name = f"trust-{uuid.uuid4().hex[:10]}/img"
        self.repository = f"{REGISTRY}/{self.name}"
        self.digests: list[str] = []

    def image(self) -> str:
        d = push_image(self.reg, self.name, tag=f"t{len(self.digests)}")
        self.digests.append(d)
        return f"{self.repository}@{d}"


@contextmanager
def trust_repo() -> Iterator[TrustRepo]:
    with RegistryClient(REGISTRY) as reg:
        repo = TrustRepo(reg)
        try:
            yield repo
        finally:
            cleanup(reg, repo.name, repo.digests)
