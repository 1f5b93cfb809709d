"""The manifest gate: pin both digests of a release (image and weights) in an overlay (in a scratch copy),
render, validate, apply policy. An overlay rendered without both digests fails the `model-digest` and
`image-digest` rules."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pipeline.adapters.kubectl import Kustomize
from pipeline.errors import BadInput
from pipeline.manifests import kustomization, policy, render, validate
from pipeline.models import ImageRef, RunRecord
from pipeline.schemas.manifests import ManifestsDetails


def measured_load_time(run: RunRecord) -> tuple[float | None, str | None]:
    """The boot stage's p95 load time of this run's digest (a single repetition records only load_time_s)."""
    boot = run.stage("boot")
    if boot is None or boot.status.value != "ok":
        return None, None
    for name in ("load_time_p95_s", "load_time_s"):
        value = boot.metrics.get(name)
        if value is not None:
            return float(value), f"boot.{name}"
    return None, None


def check_rendered(
    directory: Path, *, overlay: str, load_time_s: float | None, k8s_version: str = validate.DEFAULT_K8S_VERSION,
    kustomize: Kustomize | None = None,
) -> ManifestsDetails:
    objs = render.render(directory, kustomize)
    report = ManifestsDetails(overlay=overlay, k8s_version=validate.resolve_version(k8s_version),
                            load_time_s=load_time_s, objects=[render.object_name(o) for o in objs])
    report.schema_errors = validate.validate_objects(objs, k8s_version)
    report.violations = policy.check(objs, load_time_s=load_time_s)
    if load_time_s is not None:
        estimates = policy.estimate(objs, load_time_s)
        report.rollout_estimates = [e.describe() for e in estimates]
        report.rollout_s = max((e.total_s for e in estimates), default=None)
    return report


def overlay_dir(manifests_dir: Path, overlay: str) -> Path:
    d = manifests_dir / "overlays" / overlay
    if not (d / "kustomization.yaml").is_file():
        known = sorted(p.name for p in (manifests_dir / "overlays").glob("*") if (p / "kustomization.yaml").is_file())
        raise BadInput(f"no overlay {overlay!r} (known: {', '.join(known) or 'none'})", where=str(d))
    return d


def check_overlay(
    manifests_dir: Path,
    overlay: str,
    *,
    image: ImageRef | None,
    load_time_s: float | None,
    k8s_version: str = validate.DEFAULT_K8S_VERSION,
    model_digest: str | None = None,
    kustomize: Kustomize | None = None,
) -> ManifestsDetails:
    """Check `overlay` as it would be deployed with `image` and `model_digest` pinned; the source tree is
    not touched. Without a model digest the overlay keeps what it pins (a placeholder fails the gate)."""
    overlay_dir(manifests_dir, overlay)
    with tempfile.TemporaryDirectory(prefix="llmgate-manifests-") as tmp:
        copy = Path(tmp) / "manifests"
        shutil.copytree(manifests_dir, copy, symlinks=True)
        kfile = copy / "overlays" / overlay / "kustomization.yaml"
        if image is not None and image.digest:
            kfile.write_text(kustomization.with_image(kfile.read_text(), repository=image.repository,
                                                      digest=image.digest, where=str(kfile)))
        if model_digest is not None:
            kfile.write_text(kustomization.with_model_digest(kfile.read_text(), digest=model_digest, where=str(kfile)))
        report = check_rendered(kfile.parent, overlay=overlay, load_time_s=load_time_s, k8s_version=k8s_version,
                                kustomize=kustomize)
    report.image = image.by_digest if image is not None and image.digest else None
    report.model_digest = model_digest
    return report
