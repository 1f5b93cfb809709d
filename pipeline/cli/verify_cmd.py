"""`llmgate verify IMAGE@DIGEST`: the image signature; the newest signed verdict, each evidence link it
was judged on, and its place in the verdict log; the SBOM and provenance attestations. Each is checked
against the public key and printed with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import ConfigOpt, app, handle_errors, out, plain, state
from pipeline.errors import ExitCode


def _log(public_key):  # type: ignore[no-untyped-def]
    """The verdict log as this work dir sees it: the store's copy when there is a store (a SQLite file that
    does not exist yet is not created here), the registry's copy, and the checkpoint this verifier saw last."""
    from pipeline.supplychain.verdict_log import SEEN_DIR, VerdictLog

    ws = state.workspace()
    path = ws.store_location.path
    store = ws.store if path is None or path.exists() else None
    return VerdictLog(store, public_key.key, seen_dir=ws.root / SEEN_DIR, location=ws.store_location)


@app.command()
@handle_errors
def verify(
    image: Annotated[str, typer.Argument(help="REPO@sha256:<digest> (never a tag).")],
    key: Annotated[Path | None, typer.Option("--key", help="Public key (cosign.pub); default: the config's sign.public_key.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The weights' digest: the verdict about this (image, "
                                              "model) pair (default: the newest verdict about the image).",
                                              metavar="sha256:…")] = None,
    config: ConfigOpt = None,
) -> None:
    """Verify the signature, the newest verdict with its evidence links and its place in the verdict
    log, the SBOM and the provenance of an image digest. Exit 0 all valid, 1 any refused, 2 bad key
    file or reference.

    Example: llmgate verify 127.0.0.1:5000/llmgate/server@sha256:… --model sha256:… --key cosign.pub
    """
    from pipeline.adapters.bundle import Adapters
    from pipeline.config import load_config
    from pipeline.errors import BadInput
    from pipeline.models import DIGEST_RE, ImageRef
    from pipeline.supplychain.signing import load_public_key, verify_release

    cfg = load_config(config)
    pub = load_public_key(key if key is not None else Path(cfg.sign.public_key))
    signer = Adapters().signing(cfg.sign.timeout_s)
    if model is not None and not DIGEST_RE.match(model):
        raise BadInput(f"not a sha256 digest: {model!r}", where="--model")
    result = verify_release(ImageRef.parse(image), pub, signer=signer, log=_log(pub), model_digest=model)
    say = lambda text: out.print(plain(text), highlight=False, soft_wrap=True)
    say(f"{result.image} (key {pub.key_id}, {signer.name} verifier)")
    for c in result.checks:
        say(f"  {c.name:<10} {'valid' if c.valid else 'REFUSED'}: {c.reason}")
        if c is result.evidence:
            for link in result.links:
                signer_id = link.key_id[:23] + "…" if link.key_id else "unsigned"
                say(f"    {link.stage:<10} result sha256:{link.result_sha256[:16]}…  link "
                    f"{('sha256:' + link.link_sha256[:16] + '…') if link.link_sha256 else '-':<24} signer {signer_id}  "
                    f"{'verified' if link.verified else 'NOT VERIFIED: ' + link.reason}")
    v = result.verdict.predicate
    if v is not None:
        model = v.model.digest if v.model else "unknown"
        policy = f"{v.policy.name} (sha256 {v.policy.sha256})" if v.policy else "unknown"
        say(f"  verdict: run {v.run_id}, decision {v.decision.value}, model {model}, policy {policy}, gated "
            f"{v.created.isoformat(timespec='seconds')}")
    pos = result.position
    if pos is not None:
        where = f"entry #{pos.index} of {pos.size}" if pos.index is not None else f"not among its {pos.size} entries"
        newest = ("yes" if pos.is_newest else f"no, entry #{pos.newest[0]} is ({pos.newest[1]})" if pos.newest
                  else "no entry for the pair")
        say(f"  verdict log: {pos.origin}: {where}, checkpoint root {pos.root or '-'}; newest for the pair: {newest}")
    raise typer.Exit(int(ExitCode.PASS if result.valid else ExitCode.GATE_FAILED))
