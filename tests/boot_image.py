"""Builds the metronome TEST DOUBLE as a container image FROM the local base image (python3 only),
for boot tests: starts in a second, and its start-up, readiness and death are set by METRONOME_* env."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRONOME = REPO / "tests" / "doubles" / "metronome.py"


def build_metronome_image(client, base_ref: str) -> str:
    src = METRONOME.read_bytes()
    tag = f"llmgate-test/engb-metronome:{hashlib.sha256(src + base_ref.encode()).hexdigest()[:12]}"
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(METRONOME, Path(d) / "metronome.py")
        (Path(d) / "Dockerfile").write_text(
            f"FROM {base_ref}\n"
            "COPY metronome.py /srv/metronome.py\n"
            'ENTRYPOINT ["python3", "-u", "/srv/metronome.py", "--host", "0.0.0.0", "--port", "8000"]\n'
        )
        client.images.build(path=d, tag=tag, rm=True, forcerm=True)
    return tag
