"""Build time and size of the tool image (dockerfiles/llmgate.Dockerfile) on the local engine.

Builds it the way tests/test_tool_image.py does (the project's BuildKit adapter, FROM the seeded base
of dockerfiles/base.lock.json, the host CA bundle as secret `ca_bundle`, the CPU torch wheel staged in
.whl/), first cold (`--no-cache`, pip's cache mount ignored: every package downloaded again), then
again with the cache, and prints seconds and the image size.
The image is removed afterwards; the BuildKit cache is left as it is (it is shared).

Usage: python benchmarks/tool_image.py [--warm-only] [--tag llmgate-bench/tool:latest]
Needs: a Docker Engine with BuildKit and the seeded base (`llmgate stack up`). Nothing is pulled.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import ci_plan
from pipeline.adapters.docker_build import BuildSpec, DockerBuilder
from pipeline.baselock import require_lock
from pipeline.config import PipelineConfig
from pipeline.stages.build import stage_wheels

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class ColdBuilder(DockerBuilder):
    """The project's builder with BuildKit's layer cache off (`--no-cache`)."""

    def argv(self, spec: BuildSpec, iidfile: Path) -> list[str]:
        argv = super().argv(spec, iidfile)
        return [*argv[:-1], "--no-cache", argv[-1]]  # the context stays last


def build(builder: DockerBuilder, tag: str, *, cold: bool) -> float:
    spec = BuildSpec(dockerfile=REPO / ci_plan.TOOL_DOCKERFILE, context=REPO, image=tag,
                     build_args={"BASE_IMAGE": require_lock(REPO / "dockerfiles" / "base.lock.json").ref},
                     secret_files={"ca_bundle": CA_BUNDLE} if CA_BUNDLE.is_file() else {}, network="host",
                     timeout_s=3600)
    if cold:
        spec.build_args["PIP_NO_CACHE_DIR"] = "1"  # pip's cache mount outlives --no-cache; ignore it too
        builder = ColdBuilder(builder.cli)
    outcome = builder.build(spec)
    if not outcome.ok:
        raise SystemExit(f"build failed: {outcome.error}")
    return outcome.duration_s


def image_bytes(builder: DockerBuilder, tag: str) -> int:
    r = builder.cli.run("image", "inspect", "--format", "{{.Size}}", tag)
    return int(r.stdout.decode().strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm-only", action="store_true", help="skip the cold build")
    ap.add_argument("--tag", default="llmgate-bench/tool:latest")
    args = ap.parse_args()

    stage_wheels(PipelineConfig(), REPO)
    (REPO / ".tools").mkdir(exist_ok=True)
    builder = DockerBuilder()
    try:
        if not args.warm_only:
            cold = build(builder, args.tag, cold=True)
            print(f"cold build: {cold:.0f} s, image {image_bytes(builder, args.tag) / 1e9:.2f} GB (uncompressed)")
        warm = build(builder, args.tag, cold=False)
        print(f"build with the cache: {warm:.0f} s, image {image_bytes(builder, args.tag) / 1e9:.2f} GB")
    finally:
        subprocess.run([builder.cli.path, "rmi", args.tag], capture_output=True, check=False)


if __name__ == "__main__":
    main()
