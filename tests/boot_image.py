"""Builds the metronome TEST DOUBLE as a container image FROM the local base image (python3 only),
for boot tests: starts in a second, and its start-up, readiness and death are set by METRONOME_* env."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRONOME = REPO / "tests" / "doubles" / "metronome.py"


def build_metronome_image(client, base_ref: str, registry: str | None = None) -> str:
    """The image's tag; with `registry`, it is also pushed there and its `repo@sha256:…` reference returned
    (a run is always for an image by digest)."""
    src = METRONOME.read_bytes()
    repo = f"{registry}/llmgate-test/engb-metronome" if registry else "llmgate-test/engb-metronome"
    tag = f"{repo}:{hashlib.sha256(src + base_ref.encode()).hexdigest()[:12]}"
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(METRONOME, Path(d) / "metronome.py")
        (Path(d) / "Dockerfile").write_text(
            f"FROM {base_ref}\n"
            "COPY metronome.py /srv/metronome.py\n"
            'ENTRYPOINT ["python3", "-u", "/srv/metronome.py", "--host", "0.0.0.0", "--port", "8000"]\n'
        )
        client.images.build(path=d, tag=tag, rm=True, forcerm=True)
    if registry is None:
        return tag
    for line in client.images.push(repo, tag=tag.rsplit(":", 1)[1], stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {tag} failed: {line['error']}")
    digests = client.images.get(tag).attrs["RepoDigests"]
    return next(d for d in digests if d.startswith(repo + "@"))
