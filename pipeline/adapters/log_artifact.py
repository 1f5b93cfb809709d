"""A verdict log kept in a registry as an OCI artifact, next to the images it speaks about.

The artifact is an OCI image manifest tagged `llmgate-verdict-log-<log id>` in the image repository, with
`artifactType` `application/vnd.llmgate.verdict-log.v1`, the OCI empty config (`{}`,
`application/vnd.oci.empty.v1+json`, as OCI 1.1 artifacts carry) and two layers: the newest signed
checkpoint (a C2SP signed note) and every entry, one canonical JSON document per line, by index.
Only bytes move here; what they mean and whether they can be trusted is
pipeline/supplychain/verdict_log.py's concern (a registry writer can replace this tag at will).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline.adapters.registry import OCI_MANIFEST, OciRegistry
from pipeline.errors import InfraError

TAG_PREFIX = "llmgate-verdict-log-"
ARTIFACT_TYPE = "application/vnd.llmgate.verdict-log.v1"
CHECKPOINT_MEDIA_TYPE = "application/vnd.llmgate.verdict-log.checkpoint.v1"
ENTRIES_MEDIA_TYPE = "application/vnd.llmgate.verdict-log.entries.v1+jsonl"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
MAX_CHECKPOINT_BYTES = 64 * 1024
MAX_ENTRIES_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class PulledLog:
    checkpoint: str
    entries: list[str]
    manifest_digest: str


def _layer(media_type: str, data: bytes, digest: str) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def tag_for(log_id: str) -> str:
    return TAG_PREFIX + log_id


def push(reg: OciRegistry, name: str, tag: str, checkpoint: str, entries: list[str]) -> str:
    """Put the log under `tag` in repository `name`; returns the manifest digest."""
    note = checkpoint.encode()
    lines = "".join(e + "\n" for e in entries).encode()
    config_digest = reg.upload_blob(name, EMPTY_CONFIG)
    layers = [_layer(CHECKPOINT_MEDIA_TYPE, note, reg.upload_blob(name, note)),
              _layer(ENTRIES_MEDIA_TYPE, lines, reg.upload_blob(name, lines))]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": len(EMPTY_CONFIG)},
        "layers": layers,
    }, separators=(",", ":")).encode()
    return reg.put_manifest(name, tag, manifest, OCI_MANIFEST)


def pull(reg: OciRegistry, name: str, tag: str) -> PulledLog | None:
    """The log under `tag`, or None when there is none. A manifest that is not this artifact is an
    InfraError naming it (never read as an empty log)."""
    if not reg.has_manifest(name, tag):
        return None
    m = reg.manifest(name, tag)
    where = f"{reg.host}/{name}:{tag}"
    by_type = {str(layer.get("mediaType")): layer for layer in m.layers}
    if m.data.get("artifactType") != ARTIFACT_TYPE or set(by_type) != {CHECKPOINT_MEDIA_TYPE, ENTRIES_MEDIA_TYPE}:
        raise InfraError(f"{tag} is not a verdict log artifact ({ARTIFACT_TYPE})", where=where)
    for media_type, limit in ((CHECKPOINT_MEDIA_TYPE, MAX_CHECKPOINT_BYTES), (ENTRIES_MEDIA_TYPE, MAX_ENTRIES_BYTES)):
        if int(by_type[media_type].get("size", 0)) > limit:
            raise InfraError(f"{media_type} layer exceeds {limit} bytes", where=where)
    try:
        note = reg.blob_bytes(name, str(by_type[CHECKPOINT_MEDIA_TYPE]["digest"])).decode()
        lines = reg.blob_bytes(name, str(by_type[ENTRIES_MEDIA_TYPE]["digest"])).decode()
    except UnicodeDecodeError as exc:
        raise InfraError("verdict log layer is not UTF-8 text", where=where) from exc
    return PulledLog(checkpoint=note, entries=[ln for ln in lines.split("\n") if ln], manifest_digest=m.digest)
