"""The release identity of a model's weights: `ModelRef(path, digest, files, bytes)`.

The manifest itself (what is hashed, how symlinks are treated, the canonical JSON) lives in
`pipeline.supplychain.weights_manifest`, which is standard-library only because the serving images
run the same file in their readiness helper. This module only turns it into the pipeline's model
and its errors.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import BadInput
from pipeline.models import ModelRef
from pipeline.supplychain.weights_manifest import Manifest, ManifestError, build_manifest


def weights_manifest(path: str | Path) -> Manifest:
    """The full manifest of a weights directory (every file read); BadInput naming the path at fault."""
    try:
        return build_manifest(path)
    except ManifestError as exc:
        raise BadInput(exc.message, where=exc.where,
                       hint="the weights directory must hold only regular files (and links inside it)") from exc


def model_ref(path: str | Path) -> ModelRef:
    """`ModelRef` of the weights directory at `path`."""
    m = weights_manifest(path)
    return ModelRef(path=str(path), digest=m.digest, files=m.files, bytes=m.bytes)
