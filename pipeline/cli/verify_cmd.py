"""`llmgate verify IMAGE@DIGEST`: the image signature and the verdict, SBOM and provenance
attestations, each checked against the public key and printed with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import ConfigOpt, app, handle_errors, out, plain
from pipeline.errors import ExitCode


@app.command()
@handle_errors
def verify(
    image: Annotated[str, typer.Argument(help="REPO@sha256:<digest> (never a tag).")],
    key: Annotated[Path | None, typer.Option("--key", help="Public key (cosign.pub); default: the config's sign.public_key.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Verify the signature, verdict, SBOM and provenance of an image digest. Exit 0 all valid,
    1 any refused, 2 bad key file or reference.

    Example: llmgate verify 127.0.0.1:5000/llmgate/server@sha256:… --key cosign.pub
    """
    from pipeline.config import load_config
    from pipeline.models import ImageRef
    from pipeline.supplychain.signing import default_signer, load_public_key, verify_release

    pub = load_public_key(key if key is not None else Path(load_config(config).sign.public_key))
    signer = default_signer()
    result = verify_release(ImageRef.parse(image), pub, signer=signer)
    out.print(plain(f"{result.image} (key {pub.key_id}, {signer.name} verifier)"), highlight=False)
    for c in result.checks:
        out.print(plain(f"  {c.name:<10} {'valid' if c.valid else 'REFUSED'}: {c.reason}"), highlight=False,
                  soft_wrap=True)
    v = result.verdict.predicate
    if v is not None:
        model = v.model.digest if v.model else "unknown"
        policy = f"{v.policy.name} (sha256 {v.policy.sha256})" if v.policy else "unknown"
        out.print(plain(f"  verdict: run {v.run_id}, decision {v.decision.value}, model {model}, policy {policy}"),
                  highlight=False, soft_wrap=True)
    raise typer.Exit(int(ExitCode.PASS if result.valid else ExitCode.GATE_FAILED))
